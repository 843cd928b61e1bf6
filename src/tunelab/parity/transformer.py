"""tunelab.scratch.transformer against torch: F.scaled_dot_product_attention, nn.MultiheadAttention,
nn.LayerNorm and nn.Transformer, each given the same weights and inputs."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.parity import Check
from tunelab.scratch import transformer as scratch

B, S, T, C, NH = 2, 7, 5, 16, 4
CFG = scratch.TransformerConfig(d_model=C, nhead=NH, num_encoder_layers=2, num_decoder_layers=2,
                                dim_feedforward=32, dropout=0.0)


def _is_pad():
    is_pad = torch.zeros(B, S, dtype=torch.bool)
    is_pad[1, -3:] = True  # the second sequence is 3 tokens shorter
    return is_pad


def sdpa_causal() -> float:
    torch.manual_seed(0)
    q, k, v = torch.randn(3, B, NH, T, C // NH).unbind(0)
    ours = scratch.attention(q, k, v, scratch.causal_mask(T))
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return (ours - theirs).abs().max().item()


def sdpa_padding() -> float:
    torch.manual_seed(0)
    q = torch.randn(B, NH, T, C // NH)
    k, v = torch.randn(2, B, NH, S, C // NH).unbind(0)
    mask = scratch.padding_mask(_is_pad())
    ours = scratch.attention(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return (ours - theirs).abs().max().item()


def multihead_attention() -> float:
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(C, NH, batch_first=True).eval()
    nn.init.normal_(theirs.in_proj_bias)  # torch starts the biases at zero, which would hide a bias bug
    ours = scratch.MultiheadAttention(C, NH).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(B, S, C)
    is_pad = _is_pad()
    causal = scratch.causal_mask(S)
    # torch's masks mark what to hide; ours mark what to keep.
    expected, _ = theirs(x, x, x, key_padding_mask=is_pad, attn_mask=~causal, need_weights=False)
    got = ours(x, x, x, scratch.padding_mask(is_pad) & causal)
    return (got - expected).abs().max().item()


def layernorm() -> float:
    torch.manual_seed(0)
    theirs = nn.LayerNorm(C)
    nn.init.normal_(theirs.weight)
    nn.init.normal_(theirs.bias)
    ours = scratch.LayerNorm(C)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(B, T, C) * 3 + 1
    return (ours(x) - theirs(x)).abs().max().item()


def encoder_decoder() -> float:
    torch.manual_seed(0)
    theirs = nn.Transformer(**dataclasses.asdict(CFG), batch_first=True).eval()
    ours = scratch.Transformer(CFG).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    src, tgt = torch.randn(B, S, C), torch.randn(B, T, C)
    is_pad = _is_pad()
    expected = theirs(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T), tgt_is_causal=True,
                      src_key_padding_mask=is_pad, memory_key_padding_mask=is_pad)
    return (ours(src, tgt, is_pad) - expected).abs().max().item()


CHECKS = [
    Check("attention sdpa causal", "F.scaled_dot_product_attention(is_causal=True)", sdpa_causal, 1e-6),
    Check("attention sdpa padding", "F.scaled_dot_product_attention(attn_mask)", sdpa_padding, 1e-6),
    Check("attention multi-head", "torch nn.MultiheadAttention", multihead_attention, 1e-6),
    Check("layernorm", "torch nn.LayerNorm", layernorm, 1e-6),
    # Two encoder and two decoder layers, each ending in a LayerNorm: rounding of ~1e-7 per op adds up to ~1e-6.
    Check("transformer encoder-decoder", "torch nn.Transformer", encoder_decoder, 1e-5),
]
