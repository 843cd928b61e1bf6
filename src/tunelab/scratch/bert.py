"""BERT from scratch: a bidirectional transformer encoder with post-LayerNorm residuals.

Paper: Devlin et al. 2018, https://arxiv.org/abs/1810.04805
Hugging Face: https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py
Parameter names follow Hugging Face, so a BertModel state_dict (all-MiniLM-L6-v2 included) loads with
strict=True. No dropout: this is the forward pass, written to be read.
The padding mask is additive (0 to keep, -inf to hide), the classic BERT form: built once per batch and
added to every layer's scores. No row is all -inf (which would give NaN): every row sees the real tokens.
"""

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segment A / segment B, for sentence-pair inputs
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, hf_config):
        # transformers 5 only has absolute positions; a config saved by v4 may still ask for relative ones
        positions = getattr(hf_config, "position_embedding_type", "absolute")
        for name, value, ours in (("hidden_act", hf_config.hidden_act, "gelu"),
                                  ("position_embedding_type", positions, "absolute")):
            if value != ours:  # refuse, rather than return silently different hidden states
                raise ValueError(f"scratch BERT implements {name}={ours!r} only; this config has {value!r}")
        return cls(**{f.name: getattr(hf_config, f.name) for f in fields(cls)})


class BertEmbeddings(nn.Module):
    """Token + learned absolute position + segment embeddings, summed, then normalized."""

    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)  # (B, T, C)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, mask):
        B, T, C = x.shape
        hs = C // self.n_head
        q = self.query(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1) / math.sqrt(hs) + mask).softmax(dim=-1)  # (B, nh, T, T)
        return (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class BertAddNorm(nn.Module):
    """Project, add the residual, then normalize: post-LN, the original transformer's order.
    Hugging Face calls the two instances per layer BertSelfOutput and BertOutput."""

    def __init__(self, in_features, cfg):
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h, residual):  # h (B, T, in_features), residual (B, T, C)
        return self.LayerNorm(residual + self.dense(h))  # (B, T, C)


class BertAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertAddNorm(cfg.hidden_size, cfg)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):  # x (B, T, C)
        return F.gelu(self.dense(x))  # (B, T, intermediate_size); the exact (erf) GELU, not the tanh approximation


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertAddNorm(cfg.intermediate_size, cfg)

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """A sentence vector from the [CLS] token, trained by next-sentence prediction."""

    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # (B, C)


class BertModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Returns (last_hidden_state (B, T, C), pooler_output (B, C))."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # padded keys get -inf; padded queries still attend to the real tokens, and are ignored downstream
        blocked = (attention_mask == 0)[:, None, None, :]  # (B, 1, 1, T)
        mask = torch.zeros(blocked.shape, device=blocked.device).masked_fill(blocked, float("-inf"))
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)  # (B, T, C)
        return x, self.pooler(x)
