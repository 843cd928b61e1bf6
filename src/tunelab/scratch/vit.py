"""ViT from scratch: an image read as a sentence of patches, by a plain pre-LN transformer encoder.

Paper: Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929
Hugging Face: https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py
Parameter names follow Hugging Face, so a ViTModel state_dict loads with strict=True (build ours with
add_pooling_layer=False for a ViTModel built without its pooler). No dropout: this is the forward pass,
written to be read.

The whole model: cut a (3, 224, 224) image into 14 x 14 patches of 16 x 16 pixels; embed each patch
with one linear map (a conv whose stride is its kernel size is exactly that); put a learned [CLS]
token in front; add a learned position vector to every token (the encoder itself is blind to order);
run pre-LN blocks; LayerNorm; read the image's summary off the [CLS] token. scratch/mae.py reuses
these pieces with fixed sin-cos positions and most of the patches hidden.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ViTConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    image_size: int = 224  # square images only: H = W = image_size
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    pooler_output_size: int | None = None  # None: hidden_size, as transformers

    @classmethod
    def from_hf(cls, hf_config):
        """ViTConfig from a transformers ViTConfig (or ViTMAEConfig: the fields they share)."""
        for name, value, ours in (("hidden_act", hf_config.hidden_act, "gelu"),
                                  ("pooler_act", getattr(hf_config, "pooler_act", "tanh"), "tanh")):
            if value != ours:  # refuse, rather than return silently different hidden states
                raise ValueError(f"scratch ViT implements {name}={ours!r} only; this config has {value!r}")
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(hf_config, name), int):
                raise ValueError(f"scratch ViT implements square images and patches only: {name} must be one int; "
                                 f"this config has {getattr(hf_config, name)!r}")
        shared = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_norm_eps",
                  "image_size", "patch_size", "num_channels", "qkv_bias")
        return cls(**{name: getattr(hf_config, name) for name in shared},
                   pooler_output_size=getattr(hf_config, "pooler_output_size", None))

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2


class ViTPatchEmbeddings(nn.Module):
    """(B, C_in, H, W) pixels -> (B, N, C) patch vectors, N = (H/P) * (W/P), in row-major order."""

    def __init__(self, cfg):
        super().__init__()
        P = cfg.patch_size
        # kernel = stride = P: each output pixel sees one patch, once, so the conv is a Linear on flattened patches
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=P, stride=P)

    def forward(self, pixel_values):
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, C, H/P, W/P) -> (B, N, C)


class ViTEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(cfg)
        # learned, one vector per slot ([CLS] + N patches); nothing tells the model that patch 1 is next to
        # patch 2 except what training writes into these vectors
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.hidden_size))
        nn.init.trunc_normal_(self.cls_token, std=0.02)  # transformers' initializer_range
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)

    def forward(self, pixel_values):
        x = self.patch_embeddings(pixel_values)  # (B, N, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, C)
        return torch.cat([cls, x], dim=1) + self.position_embeddings  # (B, N+1, C)


class ViTAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.q_proj = nn.Linear(C, C, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(C, C, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(C, C, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(C, C)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q = self.q_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1) / math.sqrt(hs)).softmax(dim=-1)  # (B, nh, T, T); no mask: all see all
        return self.o_proj((att @ v).transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class ViTMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):  # x (B, T, C)
        return self.fc2(F.gelu(self.fc1(x)))  # (B, T, C); exact (erf) GELU, transformers' "gelu"


class ViTLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = ViTAttention(cfg)
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = ViTMLP(cfg)

    def forward(self, x):  # x (B, T, C)
        x = x + self.attention(self.layernorm_before(x))  # pre-LN: the residual stream itself is never normalized
        return x + self.mlp(self.layernorm_after(x))  # (B, T, C)


class ViTPooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.pooler_output_size or cfg.hidden_size)

    def forward(self, x):  # x (B, T, C)
        return torch.tanh(self.dense(x[:, 0]))  # (B, C_pool): BERT's pooler, on the [CLS] token


class ViTModel(nn.Module):
    def __init__(self, cfg, add_pooling_layer=True):
        super().__init__()
        self.embeddings = ViTEmbeddings(cfg)
        self.layers = nn.ModuleList([ViTLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # pre-LN needs one at the end
        self.pooler = ViTPooler(cfg) if add_pooling_layer else None

    def forward(self, pixel_values):
        """Returns (last_hidden_state (B, N+1, C), pooler_output (B, C_pool) or None)."""
        x = self.embeddings(pixel_values)  # (B, N+1, C)
        for layer in self.layers:
            x = layer(x)
        x = self.layernorm(x)  # (B, N+1, C)
        return x, self.pooler(x) if self.pooler is not None else None
