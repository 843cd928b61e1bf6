"""tunelab.scratch.rwkv against transformers' RWKV (the PyTorch path, rwkv_linear_attention_cpu): time mixing
with keys large enough to overflow a naive e^k, channel mixing, and a whole tiny RwkvForCausalLM's logits."""

from __future__ import annotations

import torch
import transformers
from transformers.models.rwkv import modeling_rwkv as hf_rwkv

from tunelab.parity import Check
from tunelab.scratch import rwkv


def hf_config() -> transformers.RwkvConfig:
    # 2 layers: below rescale_every (6), so transformers' fp16 rescaling never acts
    return transformers.RwkvConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, intermediate_size=48,
                                   attention_hidden_size=24, context_length=64)


def redraw(module: torch.nn.Module) -> None:
    """Every parameter at random: built alone, transformers' RWKV modules hold torch.empty."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


def time_mixing_diff() -> float:
    """The key weights scaled by 100: keys reach ~600 and a third of them pass 88, where e^k overflows
    float32 (summed naively, three quarters of the outputs come out inf or NaN); the running-max loop stays finite."""
    torch.manual_seed(0)
    cfg = hf_config()
    ref = hf_rwkv.RwkvSelfAttention(cfg, layer_id=0).eval()
    redraw(ref)
    with torch.no_grad():
        ref.key.weight.mul_(100.0)
    ours = rwkv.RwkvSelfAttention(rwkv.RwkvConfig.from_hf(cfg))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        want, _ = ref(x)
        got = ours(x)
    return (got - want).abs().max().item()


def channel_mixing_diff() -> float:
    torch.manual_seed(0)
    cfg = hf_config()
    ref = hf_rwkv.RwkvFeedForward(cfg, layer_id=0).eval()
    redraw(ref)
    ours = rwkv.RwkvFeedForward(rwkv.RwkvConfig.from_hf(cfg))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        want, _ = ref(x)
        return (ours(x) - want).abs().max().item()


def logits_diff() -> float:
    torch.manual_seed(0)
    hf = transformers.RwkvForCausalLM(hf_config()).eval()
    redraw(hf)
    ours = rwkv.RwkvForCausalLM.from_hf(hf)
    input_ids = torch.randint(0, 96, (3, 12))
    with torch.no_grad():
        ref = hf(input_ids, use_cache=False).logits
        got = ours(input_ids)
    return (got - ref).abs().max().item()


CHECKS = [
    Check("rwkv time mixing (WKV loop), keys up to ~600", "transformers RwkvSelfAttention (rwkv_linear_attention_cpu)",
          time_mixing_diff, 1e-5),
    Check("rwkv channel mixing", "transformers RwkvFeedForward", channel_mixing_diff, 1e-5),
    Check("rwkv logits", "transformers RwkvForCausalLM", logits_diff, 1e-5),
]
