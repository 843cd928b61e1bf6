"""tunelab.scratch.moe against transformers' Qwen2-MoE: the sparse MoE block (router, experts, shared
expert) and load_balancing_loss_func."""

from __future__ import annotations

import torch
import transformers
from transformers.models.qwen2_moe import modeling_qwen2_moe as hf_moe

from tunelab.parity import Check
from tunelab.scratch import moe


def hf_config(norm_topk_prob: bool = False) -> transformers.Qwen2MoeConfig:
    return transformers.Qwen2MoeConfig(hidden_size=32, moe_intermediate_size=16, shared_expert_intermediate_size=48,
                                       num_experts=8, num_experts_per_tok=2, norm_topk_prob=norm_topk_prob)


def block_diff() -> float:
    """With and without renormalised top-k weights: the block's output, and the router logits it returns
    for the auxiliary loss. Every parameter is drawn at random: built outside a model, HF leaves the
    experts uninitialised (torch.empty) and the router at zero (all ties)."""
    worst = 0.0
    for seed, norm_topk_prob in enumerate((False, True)):
        torch.manual_seed(seed)
        cfg = hf_config(norm_topk_prob)
        ref = hf_moe.Qwen2MoeSparseMoeBlock(cfg)
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(0.0, 0.3)
        ours = moe.SparseMoeBlock(moe.MoeConfig.from_hf(cfg))
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(3, 10, 32)
        with torch.no_grad():
            y, router_logits = ours(x)
            ref_router_logits, _, _ = ref.gate(x)  # the block itself returns only its output
            worst = max(worst, (y - ref(x)).abs().max().item(),
                        (router_logits - ref_router_logits).abs().max().item())
    return worst


def aux_loss_diff() -> float:
    """Three layers' router logits, without and with a padding mask."""
    torch.manual_seed(0)
    logits = tuple(torch.randn(4 * 9, 8) for _ in range(3))  # one (B*T, E) per layer
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[3, :2] = 0
    return max(abs(moe.load_balancing_loss(logits, 8, 2, m).item()
                   - hf_moe.load_balancing_loss_func(logits, 8, 2, m).item()) for m in (None, mask))


CHECKS = [
    Check("moe sparse block + router logits", "transformers Qwen2MoeSparseMoeBlock", block_diff, 1e-5),
    Check("moe load-balancing loss", "transformers qwen2_moe load_balancing_loss_func", aux_loss_diff, 1e-6),
]
