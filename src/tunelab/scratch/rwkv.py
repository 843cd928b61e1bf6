"""RWKV-4 from scratch: an RNN that trains like a transformer. Attention is replaced by "time mixing", a
weighted average of past values whose weights decay exponentially with distance (learned per channel), and
the MLP by "channel mixing"; both see the previous token through a token shift.

Paper: Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era", https://arxiv.org/abs/2305.13048
(the time-mixing and channel-mixing blocks). HF source:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/rwkv/modeling_rwkv.py

Parameter names are those of transformers' RwkvForCausalLM, so its state_dict loads with strict=True.
Left out: transformers' `rescale_every` (in eval it halves the residual stream every 6 layers and the output
weights to match, an fp16 overflow guard that LayerNorm makes nearly invisible), and the recurrent state
passed between calls. Shapes: B batch, T tokens, C hidden size, A attention width (= C unless set),
I channel-mixing width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RwkvConfig:
    # Defaults: rwkv-4-169m-pile. Field names match transformers' RwkvConfig.
    vocab_size: int = 50277
    hidden_size: int = 768
    num_hidden_layers: int = 12
    attention_hidden_size: int | None = None  # A; None: hidden_size
    intermediate_size: int | None = None  # F; None: 4 * hidden_size
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = False

    @classmethod
    def from_hf(cls, hf_config) -> RwkvConfig:
        return cls(**{f.name: getattr(hf_config, f.name) for f in fields(cls)})


def token_shift(x):  # x (B, T, C) -> (B, T, C): row t holds x_{t-1}, row 0 zeros
    return F.pad(x, (0, 0, 1, -1))


def mix(x, shifted, ratio):
    """Per channel, `ratio` of the current token and the rest of the previous one (learned, in [0, 1] at init)."""
    return x * ratio + shifted * (1 - ratio)


def wkv(time_decay, time_first, k, v):
    """The WKV operator, per channel, with w = exp(time_decay) > 0 and u = time_first:

        wkv_t = (sum_{i<t} e^(-(t-1-i) w + k_i) v_i + e^(u + k_t) v_t) / (sum_{i<t} e^(-(t-1-i) w + k_i) + e^(u + k_t))

    an average of the values seen so far, token i weighted by e^(k_i) and faded by e^(-w) per step back; the
    current token gets the bonus u instead. Numerator and denominator are each a running sum, so the cost is
    O(T), an RNN. k, v (B, T, A); time_decay, time_first (A,). Returns (B, T, A).

    By hand, w = ln 2 (time_decay = ln ln 2), u = 0, k = 0, v = [1, 2, 4]: wkv_1 = 1, wkv_2 = (1 + 2) / 2 = 1.5,
    wkv_3 = (1/2 * 1 + 2 + 4) / (1/2 + 1 + 1) = 6.5 / 2.5 = 2.6.

    e^(k) overflows float32 for k > 88, so the sums are kept scaled by e^(-p), p the largest exponent so far,
    and every new term is brought to the common scale first: the loop of transformers' rwkv_linear_attention_cpu
    (and of the CUDA kernel)."""
    w = -torch.exp(time_decay)  # (A,): the log of the fade per step, < 0
    num = torch.zeros_like(k[:, 0])  # (B, A): sum of e^(exponent - p) v so far
    den = torch.zeros_like(k[:, 0])  # (B, A): sum of e^(exponent - p)
    p = torch.full_like(k[:, 0], -1e38)  # (B, A): nothing seen yet
    out = []
    for t in range(k.shape[1]):
        kt, vt = k[:, t], v[:, t]  # (B, A) each
        # output: the past (scale p) plus the current token with its bonus (exponent u + k_t)
        m = torch.maximum(p, time_first + kt)  # (B, A): the new common scale
        a, b = torch.exp(p - m), torch.exp(time_first + kt - m)  # both <= 1: no overflow
        out.append((a * num + b * vt) / (a * den + b))  # (B, A)
        # state for the next token: the past fades by e^w, the current token joins without the bonus
        m = torch.maximum(p + w, kt)
        a, b = torch.exp(p + w - m), torch.exp(kt - m)
        num, den, p = a * num + b * vt, a * den + b, m
    return torch.stack(out, dim=1)  # (B, T, A)


class RwkvSelfAttention(nn.Module):
    """Time mixing: receptance r (a sigmoid gate: how much of the past to let in), key and value from
    token-shifted mixes of the input, then output(sigmoid(r) * wkv(k, v))."""

    def __init__(self, cfg: RwkvConfig):
        super().__init__()
        C, A = cfg.hidden_size, cfg.attention_hidden_size or cfg.hidden_size
        self.time_decay = nn.Parameter(torch.zeros(A))  # w = exp(time_decay): per-channel forgetting speed
        self.time_first = nn.Parameter(torch.zeros(A))  # u: the current token's bonus
        self.time_mix_key = nn.Parameter(torch.full((1, 1, C), 0.5))
        self.time_mix_value = nn.Parameter(torch.full((1, 1, C), 0.5))
        self.time_mix_receptance = nn.Parameter(torch.full((1, 1, C), 0.5))
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.receptance = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)

    def forward(self, x):  # x (B, T, C)
        shifted = token_shift(x)  # (B, T, C)
        k = self.key(mix(x, shifted, self.time_mix_key))  # (B, T, A)
        v = self.value(mix(x, shifted, self.time_mix_value))  # (B, T, A)
        r = torch.sigmoid(self.receptance(mix(x, shifted, self.time_mix_receptance)))  # (B, T, A)
        return self.output(r * wkv(self.time_decay, self.time_first, k, v))  # (B, T, C)


class RwkvFeedForward(nn.Module):
    """Channel mixing: a squared-ReLU MLP on the token-shifted mix, gated by a sigmoid receptance."""

    def __init__(self, cfg: RwkvConfig):
        super().__init__()
        C, I = cfg.hidden_size, cfg.intermediate_size or 4 * cfg.hidden_size
        self.time_mix_key = nn.Parameter(torch.full((1, 1, C), 0.5))
        self.time_mix_receptance = nn.Parameter(torch.full((1, 1, C), 0.5))
        self.key = nn.Linear(C, I, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(I, C, bias=False)

    def forward(self, x):  # x (B, T, C)
        shifted = token_shift(x)
        k = torch.relu(self.key(mix(x, shifted, self.time_mix_key))) ** 2  # (B, T, I)
        r = torch.sigmoid(self.receptance(mix(x, shifted, self.time_mix_receptance)))  # (B, T, C)
        return r * self.value(k)  # (B, T, C)


class RwkvBlock(nn.Module):
    def __init__(self, cfg: RwkvConfig, layer_id: int):
        super().__init__()
        # the embedding is normalised once, before the first block
        self.pre_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon) if layer_id == 0 else None
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
        self.attention = RwkvSelfAttention(cfg)
        self.feed_forward = RwkvFeedForward(cfg)

    def forward(self, x):
        if self.pre_ln is not None:
            x = self.pre_ln(x)
        x = x + self.attention(self.ln1(x))
        return x + self.feed_forward(self.ln2(x))


class RwkvModel(nn.Module):
    def __init__(self, cfg: RwkvConfig):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(RwkvBlock(cfg, i) for i in range(cfg.num_hidden_layers))
        self.ln_out = nn.LayerNorm(cfg.hidden_size)  # torch's default eps, whatever the config says, as in HF

    def forward(self, input_ids):  # no attention_mask: an RNN reads every token, so pad on the right
        x = self.embeddings(input_ids)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x)  # (B, T, C)


class RwkvForCausalLM(nn.Module):
    def __init__(self, cfg: RwkvConfig):
        super().__init__()
        self.rwkv = RwkvModel(cfg)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.head.weight = self.rwkv.embeddings.weight

    @classmethod
    def from_hf(cls, hf_model) -> RwkvForCausalLM:
        model = cls(RwkvConfig.from_hf(hf_model.config))
        model.load_state_dict(hf_model.state_dict(), strict=True)
        return model.to(hf_model.dtype).eval()

    def forward(self, input_ids):
        return self.head(self.rwkv(input_ids))  # (B, T, vocab)
