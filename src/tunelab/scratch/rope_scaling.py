"""RoPE scaling from scratch: how to stretch a model trained on L tokens to a longer context by changing
its rotary frequencies. Each method returns (inv_freq, attention_factor): the per-pair rotation speeds
that replace RoPE's defaults (scratch/qwen2.py RotaryEmbedding), and the factor that cos and sin are
multiplied by (so attention logits by its square).

RoPE gives feature pair i the angle `position * inv_freq[i]`, inv_freq[i] = theta^(-2i/hs). A position
beyond L produces angles the model never saw, in the slow pairs above all (the fast ones have turned
full circle many times within L already). The methods differ in which pairs they slow down, and how.

HF source: https://github.com/huggingface/transformers/blob/main/src/transformers/modeling_rope_utils.py
"""

from __future__ import annotations

import math

import torch


def default_inv_freq(head_dim: int, theta: float):
    return 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (hs/2,)


def linear(head_dim: int, theta: float, factor: float):
    """Position interpolation (https://arxiv.org/abs/2306.15595): every pair turns `factor` times slower,
    so positions up to factor * L land on angles seen in training. It blurs neighbouring tokens too,
    so it needs some fine-tuning at the new length."""
    return default_inv_freq(head_dim, theta) / factor, 1.0


def dynamic_ntk(head_dim: int, theta: float, factor: float, max_position_embeddings: int, seq_len: int):
    """Dynamic NTK-aware scaling (https://www.reddit.com/r/LocalLLaMA/comments/14mrgpr/): raise theta
    instead, which slows the slow pairs a lot and the fast ones hardly at all, and only by as much as the
    current sequence length needs: within L, nothing changes. The frequencies depend on seq_len, so a
    model recomputes them whenever the sequence outgrows the last value."""
    seq_len = max(seq_len, max_position_embeddings)
    # 1 at seq_len = L; the exponent makes the slowest pair exactly `stretch` times slower
    stretch = factor * seq_len / max_position_embeddings - (factor - 1)
    return default_inv_freq(head_dim, theta * stretch ** (head_dim / (head_dim - 2))), 1.0


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    # YaRN's fit for how much sharper attention must be at the longer length (paper, eq. 22)
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn(head_dim: int, theta: float, factor: float, original_max_position_embeddings: int,
         beta_fast: float = 32.0, beta_slow: float = 1.0, attention_factor: float | None = None,
         mscale: float | None = None, mscale_all_dim: float | None = None, truncate: bool = True):
    """YaRN (https://arxiv.org/abs/2309.00071), "NTK-by-parts": a pair that turns more than beta_fast
    times within L keeps its frequency (it already knows every angle), one that turns fewer than
    beta_slow times is interpolated like `linear`, and the pairs in between blend linearly. Attention
    is sharpened by attention_factor, from `factor` unless given (DeepSeek-V3 gives mscale, mscale_all_dim)."""
    L = original_max_position_embeddings

    def pair_turning(turns: float) -> float:  # the (fractional) pair index that turns `turns` times in L
        return head_dim * math.log(L / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low, high = pair_turning(beta_fast), pair_turning(beta_slow)  # fast pairs have low indices
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # a ramp of width zero would divide by zero
    ramp = ((torch.arange(head_dim // 2).float() - low) / (high - low)).clamp(0, 1)  # (hs/2,) 0 fast .. 1 slow

    inv_freq = default_inv_freq(head_dim, theta)  # (hs/2,)
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)
    if attention_factor is None:
        attention_factor = (yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                            if mscale and mscale_all_dim else yarn_mscale(factor))
    return inv_freq, attention_factor
