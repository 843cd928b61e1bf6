"""ALiBi from scratch: no position embeddings at all; each head adds to its attention scores a penalty
proportional to how far back the key is, with its own slope. BLOOM is built on it, and so is this file's
model: a BLOOM-style decoder (LayerNorm, fused q/k/v, GELU MLP) whose attention knows order only from ALiBi.

Paper: Press et al. 2021, "Train Short, Test Long", https://arxiv.org/abs/2108.12409
HF source: https://github.com/huggingface/transformers/blob/main/src/transformers/models/bloom/modeling_bloom.py

The penalty needs no parameters and no maximum length: a model trained on 1k tokens meets larger distances at
2k and simply penalises them more, which is why ALiBi extrapolates where learned position embeddings cannot.
Parameter names are those of transformers' BloomForCausalLM, so its state_dict loads with strict=True.
Shapes: B batch, T tokens, C hidden size, nh heads, hs head size. Masks are booleans, True where a query may
see a key; no KV cache (see qwen2.py for one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BloomConfig:
    # Defaults: bloom-560m. Field names match transformers' BloomConfig.
    vocab_size: int = 250880
    hidden_size: int = 1024
    n_layer: int = 24
    n_head: int = 16
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, hf_config) -> BloomConfig:
        if hf_config.apply_residual_connection_post_layernorm:  # refuse rather than return other logits
            raise ValueError("scratch BLOOM adds the residual from before the LayerNorm only; this config has "
                             "apply_residual_connection_post_layernorm=True")
        return cls(**{f.name: getattr(hf_config, f.name) for f in fields(cls)})


def alibi_slopes(n_head: int):
    """One slope per head, a geometric sequence. For n heads, n a power of two, head h = 1..n gets
    2^(-8h/n): for 8 heads 1/2, 1/4, ..., 1/256, for 16 heads 2^-0.5, 2^-1, ..., 2^-8. Steep heads see only
    the last few tokens, shallow ones far back.

    Any other n: the paper's rule for the power of two just below, k = 2^floor(log2 n), then the remaining
    n - k heads take every other slope of the rule for 2k heads, the odd-numbered ones, which fall halfway
    (geometrically) between those already taken. For 6 heads: k = 4 gives 1/4, 1/16, 1/64, 1/256, and the
    8-head rule's 1st and 3rd slopes add 1/2 and 1/8."""
    k = 2 ** math.floor(math.log2(n_head))
    slopes = [2 ** (-8 * h / k) for h in range(1, k + 1)]
    slopes += [2 ** (-8 * h / (2 * k)) for h in range(1, 2 * (n_head - k), 2)]  # odd h of the 2k-head rule
    return torch.tensor(slopes)  # (nh,)


def alibi_bias(slopes, positions):
    """The paper's bias, -slope * (i - j) for query position i and key position j: 0 for the token itself,
    -slope per step back (keys ahead are masked anyway). positions (B, T) count real tokens, so a left-padded
    row's first real token is position 0.

    BLOOM's build_alibi_tensor adds +slope * j instead. The two differ by slope * i, the same for every key
    of query i, and softmax ignores a constant added to a whole row: the attention weights come out equal."""
    distance = positions[:, :, None] - positions[:, None, :]  # (B, T, T): i - j
    return -slopes[None, :, None, None] * distance[:, None].float()  # (B, nh, T, T)


class BloomAttention(nn.Module):
    """Multi-head attention with the ALiBi bias added to the scaled scores before the softmax."""

    def __init__(self, cfg: BloomConfig):
        super().__init__()
        self.nh, self.hs = cfg.n_head, cfg.hidden_size // cfg.n_head
        self.query_key_value = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, bias, mask):  # x (B, T, C); bias (B, nh, T, T); mask (B, 1, T, T)
        B, T, C = x.shape
        # BLOOM's fused layout is per head: [q_h, k_h, v_h] for head 0, then head 1, ...
        qkv = self.query_key_value(x).view(B, T, self.nh, 3, self.hs)  # (B, T, nh, 3, hs)
        q, k, v = (qkv[..., i, :].transpose(1, 2) for i in range(3))  # (B, nh, T, hs) each
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs) + bias  # (B, nh, T, T)
        att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.dense(y)


class BloomMLP(nn.Module):
    def __init__(self, cfg: BloomConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, 4 * cfg.hidden_size)
        self.dense_4h_to_h = nn.Linear(4 * cfg.hidden_size, cfg.hidden_size)

    def forward(self, x):  # x (B, T, C)
        # BLOOM's GELU is the tanh approximation (its constant sqrt(2/pi) rounded to 0.79788456)
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="tanh"))  # (B, T, C)


class BloomBlock(nn.Module):
    """Pre-norm block with LayerNorm (mean and bias included, unlike Qwen2's RMSNorm)."""

    def __init__(self, cfg: BloomConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.self_attention = BloomAttention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.mlp = BloomMLP(cfg)

    def forward(self, x, bias, mask):
        x = x + self.self_attention(self.input_layernorm(x), bias, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class BloomModel(nn.Module):
    def __init__(self, cfg: BloomConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        # a LayerNorm straight after the embedding, BLOOM's addition for training stability
        self.word_embeddings_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.h = nn.ModuleList(BloomBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.register_buffer("slopes", alibi_slopes(cfg.n_head), persistent=False)  # derived, not in the state_dict

    def forward(self, input_ids, attention_mask=None):  # attention_mask (B, T): 0 on padding
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): count from the first real token
        bias = alibi_bias(self.slopes, positions)  # (B, nh, T, T): the only position signal, shared by all layers
        causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()  # (T, T)
        mask = causal[None, None] & attention_mask[:, None, None, :].bool()  # (B, 1, T, T)
        x = self.word_embeddings_layernorm(self.word_embeddings(input_ids))  # (B, T, C)
        for block in self.h:
            x = block(x, bias, mask)
        return self.ln_f(x)  # (B, T, C)


class BloomForCausalLM(nn.Module):
    def __init__(self, cfg: BloomConfig):
        super().__init__()
        self.transformer = BloomModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.transformer.word_embeddings.weight

    @classmethod
    def from_hf(cls, hf_model) -> BloomForCausalLM:
        model = cls(BloomConfig.from_hf(hf_model.config))
        model.load_state_dict(hf_model.state_dict(), strict=True)
        return model.to(hf_model.dtype).eval()

    def forward(self, input_ids, attention_mask=None):
        return self.lm_head(self.transformer(input_ids, attention_mask))  # (B, T, vocab)
