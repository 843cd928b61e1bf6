"""tunelab.scratch.rope_scaling against transformers' RoPE initialisation functions (ROPE_INIT_FUNCTIONS):
inverse frequencies and attention factor for the same settings; then YaRN's pair plugged into our Qwen2
RotaryEmbedding against transformers' Qwen2RotaryEmbedding configured for YaRN."""

from __future__ import annotations

import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.qwen2 import modeling_qwen2 as hf_qwen2

from tunelab.parity import Check
from tunelab.scratch import qwen2, rope_scaling

# Lengths are only numbers here (nothing runs at them): realistic ones put YaRN's blend mid-spectrum.
HEAD_DIM, THETA, MAX_POS = 32, 10000.0, 8192


def hf_config(rope_parameters: dict) -> transformers.Qwen2Config:
    return transformers.Qwen2Config(hidden_size=4 * HEAD_DIM, num_attention_heads=4, max_position_embeddings=MAX_POS,
                                    rope_parameters={"rope_theta": THETA, **rope_parameters})


def hf_rope(rope_parameters: dict, seq_len: int | None = None):
    return ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](hf_config(rope_parameters), None, seq_len=seq_len)


def diff(ours, ref) -> float:
    (inv_freq, factor), (ref_inv_freq, ref_factor) = ours, ref
    return max((inv_freq - ref_inv_freq).abs().max().item(), abs(factor - ref_factor))


def linear_diff() -> float:
    return diff(rope_scaling.linear(HEAD_DIM, THETA, 4.0), hf_rope({"rope_type": "linear", "factor": 4.0}))


def dynamic_diff() -> float:
    """At 3x and within the trained length (where it must equal plain RoPE)."""
    return max(diff(rope_scaling.dynamic_ntk(HEAD_DIM, THETA, 2.0, MAX_POS, seq_len),
                    hf_rope({"rope_type": "dynamic", "factor": 2.0}, seq_len=seq_len))
               for seq_len in (3 * MAX_POS, MAX_POS // 2))


def yarn_diff() -> float:
    """Default betas and attention factor; then other betas, no truncation and DeepSeek-style mscales; then a
    beta_slow so small that the blend would end past the last pair (transformers' cap at head_dim - 1)."""
    # factor = MAX_POS / original length, or transformers warns that the two disagree
    default = diff(rope_scaling.yarn(HEAD_DIM, THETA, 4.0, MAX_POS // 4),
                   hf_rope({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": MAX_POS // 4}))
    params = {"factor": 4.0, "beta_fast": 16.0, "beta_slow": 2.0, "mscale": 0.707, "mscale_all_dim": 1.0,
              "truncate": False}
    tuned = diff(rope_scaling.yarn(HEAD_DIM, THETA, original_max_position_embeddings=MAX_POS // 4, **params),
                 hf_rope({"rope_type": "yarn", "original_max_position_embeddings": MAX_POS // 4, **params}))
    past_the_end = diff(rope_scaling.yarn(HEAD_DIM, THETA, 4.0, MAX_POS // 4, beta_slow=0.01),
                        hf_rope({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": MAX_POS // 4,
                                 "beta_slow": 0.01}))
    return max(default, tuned, past_the_end)


def yarn_rotary_diff() -> float:
    """cos and sin, attention factor included, at positions up to the extended length."""
    params = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": MAX_POS // 4}
    ref = hf_qwen2.Qwen2RotaryEmbedding(hf_config(params))
    inv_freq, attention_factor = rope_scaling.yarn(HEAD_DIM, THETA, 4.0, MAX_POS // 4)
    ours = qwen2.RotaryEmbedding(qwen2.Qwen2Config(hidden_size=4 * HEAD_DIM, num_attention_heads=4,
                                                   rope_theta=THETA), inv_freq, attention_factor)
    position_ids = torch.arange(0, MAX_POS, 7)[None]  # (1, T)
    ref_cos, ref_sin = ref(torch.zeros(1), position_ids)
    cos, sin = ours(position_ids)
    return max((cos - ref_cos).abs().max().item(), (sin - ref_sin).abs().max().item())


CHECKS = [
    Check("rope linear inv_freq", "transformers ROPE_INIT_FUNCTIONS['linear']", linear_diff, 1e-7),
    Check("rope dynamic ntk inv_freq", "transformers ROPE_INIT_FUNCTIONS['dynamic']", dynamic_diff, 1e-7),
    Check("rope yarn inv_freq + attention factor", "transformers ROPE_INIT_FUNCTIONS['yarn']", yarn_diff, 1e-7),
    # Our blended inv_freq may differ from transformers' by one float32 ulp (~2e-9 where the blend acts, see
    # above); position 8000 turns that into ~2e-5 radians, and the angle's own rounding adds as much again.
    Check("rope yarn cos/sin in qwen2 RotaryEmbedding", "transformers Qwen2RotaryEmbedding (yarn)",
          yarn_rotary_diff, 1e-4),
]
