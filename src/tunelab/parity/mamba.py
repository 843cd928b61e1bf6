"""tunelab.scratch.mamba against transformers' Mamba on its pure-PyTorch path: the mixer alone (causal
convolution + selective scan) and a whole tiny MambaForCausalLM's logits on a left-padded batch.

transformers 5 has no `slow_forward` any more: MambaMixer.forward calls mamba_selective_scan and
causal_conv1d_fn, which resolve to the mamba-ssm / causal-conv1d CUDA kernels when those packages import,
and to their PyTorch bodies (a loop over time, F.conv1d) otherwise. The checks refuse to run against kernels."""

from __future__ import annotations

import importlib.util

import torch
import transformers
from transformers.models.mamba import modeling_mamba as hf_mamba

from tunelab.parity import Check
from tunelab.scratch import mamba


def hf_config() -> transformers.MambaConfig:
    return transformers.MambaConfig(vocab_size=96, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                    conv_kernel=4, time_step_rank=4, use_cache=False)


def torch_path_only() -> None:
    for package in ("mamba_ssm", "causal_conv1d"):
        if importlib.util.find_spec(package) is not None:
            raise RuntimeError(f"{package} is installed: transformers' Mamba would run its kernels, not the "
                               "PyTorch path these checks compare with")


def redraw(module: torch.nn.Module) -> None:
    """Every parameter at random (A_log, D, dt_proj and the norms included), so none keeps a special init."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


def mixer_diff() -> float:
    torch_path_only()
    torch.manual_seed(0)
    cfg = hf_config()
    ref = hf_mamba.MambaMixer(cfg, layer_idx=0).eval()  # eval: training mode would try the fused kernel first
    redraw(ref)
    ours = mamba.MambaMixer(mamba.MambaConfig.from_hf(cfg))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        return (ours(x) - ref(x)).abs().max().item()


def logits_diff() -> float:
    """Left-padded rows (padding zeroed before in_proj and after the convolution on both sides); real tokens."""
    torch_path_only()
    torch.manual_seed(0)
    hf = transformers.MambaForCausalLM(hf_config()).eval()
    redraw(hf)
    ours = mamba.MambaForCausalLM.from_hf(hf)
    input_ids = torch.randint(0, 96, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, :4] = 0
    attention_mask[2, :9] = 0
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask, use_cache=False).logits
        got = ours(input_ids, attention_mask)
    real = attention_mask.bool()
    return (got[real] - ref[real]).abs().max().item()


CHECKS = [
    Check("mamba mixer: causal conv + selective scan", "transformers MambaMixer (PyTorch path)", mixer_diff, 1e-5),
    Check("mamba logits, left-padded", "transformers MambaForCausalLM (PyTorch path)", logits_diff, 1e-5),
]
