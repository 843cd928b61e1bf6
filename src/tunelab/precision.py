"""`train.bf16: auto` (the causal LM default): train in bf16 mixed precision where it is faster.

On CUDA, where the GPU supports bf16. On the CPU, bf16 autocast (the Trainer's `bf16=True` with `use_cpu`)
runs the matmuls in bf16: fast where the CPU has bf16 instructions (AVX-512 BF16, AMX) and the model's
matmuls are big enough to outweigh the casts around them. Measured on this project's 2-core AMD EPYC
(AVX-512 BF16), LoRA forward + backward + step, fp32 -> bf16 autocast:
- SmolLM2-135M, batch 8 x 128: 6.7 -> 4.8 s/step (1.4x faster; full fine-tuning 6.4 -> 3.0 s, 2.1x);
- the 0.8M tiny Qwen2 default, batch 16 x 128: 0.257 -> 0.264 s/step (3% slower).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# Below this many parameters bf16 autocast was measured slower than fp32 on the CPU (its casts cost more
# than its matmuls save), above it faster; the two measured points are the 0.8M tiny default and SmolLM2-135M.
BF16_MIN_PARAMS = 20_000_000
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_bf16_instructions() -> str | None:
    """The CPU's bf16 instruction set (a /proc/cpuinfo flag), or None where it has none or cannot tell."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def choose_bf16(num_params: int | None) -> tuple[bool, str]:
    """(bf16 or not, why) for `train.bf16: auto` on a model of `num_params` parameters (None: unknown, a hub
    model not reachable now, taken as large)."""
    if torch.cuda.is_available():
        supported = torch.cuda.is_bf16_supported()
        return supported, f"CUDA {'supports' if supported else 'lacks'} bf16"
    instructions = cpu_bf16_instructions()
    if instructions is None:
        return False, "CPU without bf16 instructions (avx512_bf16 or amx_bf16): fp32"
    if num_params is None:
        return True, f"CPU with {instructions}, and a hub model (its size unknown offline): bf16 autocast"
    if num_params < BF16_MIN_PARAMS:
        return False, f"CPU with {instructions}, but a model under {BF16_MIN_PARAMS / 1e6:.0f}M parameters trains faster in fp32"
    return True, f"CPU with {instructions} and a model of {num_params / 1e6:.0f}M parameters: bf16 autocast"


def count_from_config(config) -> int:
    """Parameters of the causal LM `config` describes, counted on the meta device (nothing allocated)."""
    import transformers

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
