"""CLIP from scratch: an image tower and a text tower trained so that matching pairs land close
together in one embedding space.

Paper: Radford et al. 2021, https://arxiv.org/abs/2103.00020 (the image tower is a ViT,
https://arxiv.org/abs/2010.11929). Hugging Face:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py
Parameter names follow Hugging Face, so a CLIPModel state_dict loads with strict=True (including the
`pre_layrnorm` spelling). No dropout: this is the forward pass, written to be read.
Masks are additive floats (0 to keep, -inf to hide): the text tower adds a causal one to the scores, the
image tower adds the scalar 0.0, so both run through the same encoder code.
"""

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CLIPTowerConfig:  # what both towers share: a pre-LN transformer encoder
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_hf(cls, hf_config):
        if hf_config.hidden_act != "quick_gelu":  # refuse, rather than return silently different embeddings
            raise ValueError(f"scratch CLIP implements hidden_act='quick_gelu' only; this config has "
                             f"{hf_config.hidden_act!r}")
        return cls(**{f.name: getattr(hf_config, f.name) for f in fields(cls)})


@dataclass
class CLIPTextConfig(CLIPTowerConfig):
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    eos_token_id: int = 49407


@dataclass
class CLIPVisionConfig(CLIPTowerConfig):
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32


@dataclass
class CLIPConfig:
    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = math.log(1 / 0.07)  # the paper's initial temperature, 0.07

    @classmethod
    def from_hf(cls, hf_config):
        return cls(CLIPTextConfig.from_hf(hf_config.text_config), CLIPVisionConfig.from_hf(hf_config.vision_config),
                   hf_config.projection_dim, hf_config.logit_scale_init_value)


class CLIPAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, mask):
        B, T, C = x.shape
        hs = C // self.n_head
        q = self.q_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1) / math.sqrt(hs) + mask).softmax(dim=-1)  # (B, nh, T, T)
        return self.out_proj((att @ v).transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class CLIPMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):  # x (B, T, C)
        h = self.fc1(x)  # (B, T, intermediate_size)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # (B, T, C); quick_gelu: OpenAI's cheap sigmoid GELU


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg)

    def forward(self, x, mask):  # x (B, T, C)
        x = x + self.self_attn(self.layer_norm1(x), mask)  # (B, T, C); pre-LN, as in GPT-2
        return x + self.mlp(self.layer_norm2(x))  # (B, T, C)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPVisionEmbeddings(nn.Module):
    """Cut the image into patches, embed each with one strided conv, prepend a learned class token."""

    def __init__(self, cfg):
        super().__init__()
        C, P = cfg.hidden_size, cfg.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(C))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, C, kernel_size=P, stride=P, bias=False)
        self.position_embedding = nn.Embedding((cfg.image_size // P) ** 2 + 1, C)

    def forward(self, pixel_values):
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, C), N = (H/P)*(W/P)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # (B, 1, C)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight  # (B, N+1, C)


class CLIPVisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # OpenAI's ViT adds this one
        self.encoder = CLIPEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)), mask=0.0)  # (B, N+1, C), no mask
        return self.post_layernorm(x[:, 0])  # (B, C): the class token summarises the image


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids):
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]  # (B, T, C)


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.eos_token_id = cfg.eos_token_id
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids):
        B, T = input_ids.shape
        # causal, like a GPT, though CLIP never predicts tokens; padding comes after the end-of-text
        # token, so causality alone keeps it out of the pooled state and no padding mask is needed
        causal = torch.full((T, T), float("-inf"), device=input_ids.device).triu(1)  # (T, T)
        x = self.final_layer_norm(self.encoder(self.embeddings(input_ids), causal))  # (B, T, C)
        # Pool at the end-of-text token, the first one in the row (padding may reuse its id).
        # Kept for parity: configs saved before transformers fixed eos_token_id still say 2, and for them
        # transformers finds the token as the row's largest id, true of OpenAI's vocab, where it comes last.
        if self.eos_token_id == 2:
            eot = input_ids.argmax(dim=-1)  # (B,)
        else:  # argmax returns the first maximum; it refuses booleans, hence the int
            eot = (input_ids == self.eos_token_id).int().argmax(dim=-1)  # (B,)
        return x[torch.arange(B, device=x.device), eot]  # (B, C)


def clip_loss(logits_per_text):
    """Symmetric InfoNCE: in a batch of n pairs, text i must pick image i out of n, and image i text i."""
    targets = torch.arange(len(logits_per_text), device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, targets) + F.cross_entropy(logits_per_text.T, targets)) / 2


class CLIPModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.text_model = CLIPTextTransformer(cfg.text_config)
        self.vision_model = CLIPVisionTransformer(cfg.vision_config)
        self.text_projection = nn.Linear(cfg.text_config.hidden_size, cfg.projection_dim, bias=False)
        self.visual_projection = nn.Linear(cfg.vision_config.hidden_size, cfg.projection_dim, bias=False)
        # learned log temperature: exp() keeps the scale positive and lets it move by orders of magnitude
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init_value))

    def get_text_features(self, input_ids):
        return self.text_projection(self.text_model(input_ids))  # (B, D)

    def get_image_features(self, pixel_values):
        return self.visual_projection(self.vision_model(pixel_values))  # (B, D)

    def forward(self, input_ids, pixel_values):
        """Returns (logits_per_image (B_img, B_txt), loss); the loss pairs image i with text i."""
        text = F.normalize(self.get_text_features(input_ids), dim=-1)  # (B_txt, D)
        image = F.normalize(self.get_image_features(pixel_values), dim=-1)  # (B_img, D)
        logits_per_text = self.logit_scale.exp() * text @ image.T  # (B_txt, B_img): scaled cosine similarity
        return logits_per_text.T, clip_loss(logits_per_text)
