"""RoPE scaling from scratch: how to stretch a model trained on L tokens to a longer context by changing
its rotary frequencies. Each method returns (inv_freq, attention_factor), which plug into scratch/qwen2.py
as `RotaryEmbedding(cfg, inv_freq, attention_factor)`: inv_freq replaces RoPE's default per-pair rotation
speeds, and cos and sin are multiplied by attention_factor (so the attention logits by its square).

RoPE gives feature pair i the angle `position * inv_freq[i]`, inv_freq[i] = theta^(-2i/hs). A position
beyond L produces angles the model never saw, in the slow pairs above all (the fast ones have turned
full circle many times within L already). The methods differ in which pairs they slow down, and how.

HF source: https://github.com/huggingface/transformers/blob/main/src/transformers/modeling_rope_utils.py
"""

from __future__ import annotations

import math

import torch

from tunelab.scratch.qwen2 import default_inv_freq


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


def yarn(head_dim: int, theta: float, factor: float, original_max_position_embeddings: int,
         beta_fast: float = 32.0, beta_slow: float = 1.0, attention_factor: float | None = None,
         mscale: float | None = None, mscale_all_dim: float | None = None, truncate: bool = True):
    """YaRN (https://arxiv.org/abs/2309.00071), "NTK-by-parts": judge each pair by how many full turns
    it makes within the original context L. A pair turning more than beta_fast times has seen every
    angle already and keeps its speed (extrapolates); one turning fewer than beta_slow times is slowed
    `factor` times like `linear` (interpolates); the pairs between get a blend of the two. Attention is
    sharpened by attention_factor, derived from `factor` unless given (DeepSeek-V3 gives mscale, mscale_all_dim)."""
    L = original_max_position_embeddings
    inv_freq = default_inv_freq(head_dim, theta)  # (hs/2,)

    # Pair i's wavelength is 2*pi / inv_freq[i] = 2*pi * theta^(2i/hs) tokens, so it turns
    # L / wavelength times within L: a count that shrinks geometrically with i. Solved for i, the
    # (fractional) pair that turns exactly n times:
    def pair_turning(n: float) -> float:
        return head_dim / 2 * math.log(L / (2 * math.pi * n), theta)

    first, last = pair_turning(beta_fast), pair_turning(beta_slow)  # the blend runs from first to last
    if truncate:  # widen to whole pairs
        first, last = math.floor(first), math.ceil(last)
    # Kept for parity: transformers caps `last` at head_dim - 1, though the last pair is head_dim/2 - 1.
    first, last = max(first, 0), min(last, head_dim - 1)
    width = (last - first) or 1e-3  # a zero-width blend would divide by zero (transformers' 1e-3 too)
    # 0 up to `first` (keep the speed), 1 from `last` on (interpolate), linear in the pair index between
    interpolate = ((torch.arange(head_dim // 2) - first) / width).clamp(0, 1)  # (hs/2,)
    inv_freq = torch.lerp(inv_freq, inv_freq / factor, interpolate)  # (hs/2,)

    if attention_factor is None:
        # the paper's fit (eq. 22) for how much sharper attention must be at `factor` times the length:
        # 1 + 0.1 ln(factor). DeepSeek-V3 weights the 0.1 by mscale, then divides by the same with mscale_all_dim.
        def sharpen(weight: float) -> float:
            return 1.0 + 0.1 * weight * math.log(factor) if factor > 1 else 1.0

        attention_factor = sharpen(mscale) / sharpen(mscale_all_dim) if mscale and mscale_all_dim else sharpen(1.0)
    return inv_freq, attention_factor
