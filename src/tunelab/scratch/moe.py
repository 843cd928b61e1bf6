"""Mixture of experts from scratch, Qwen2-MoE style: a router sends each token to k of E small SwiGLU
experts, a shared expert sees every token, and an auxiliary loss keeps the router from favouring a few
experts. It replaces the dense MLP of a transformer block (scratch/qwen2.py Qwen2MLP): E times the
parameters, about k/E of them used per token.

Papers: Switch Transformer https://arxiv.org/abs/2101.03961 (routing, load-balancing loss),
DeepSeekMoE https://arxiv.org/abs/2401.06066 (fine-grained and shared experts), Qwen2 https://arxiv.org/abs/2407.10671
HF source: https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_moe/modeling_qwen2_moe.py

Parameter names and layouts are transformers' Qwen2MoeSparseMoeBlock, so its state_dict loads with strict=True.
Shapes: N tokens (batch and time flattened), C hidden size, E experts, k experts per token, I expert width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MoeConfig:
    # Defaults: Qwen1.5-MoE-A2.7B. Field names match transformers' Qwen2MoeConfig.
    hidden_size: int = 2048
    moe_intermediate_size: int = 1408
    shared_expert_intermediate_size: int = 5632
    num_experts: int = 60
    num_experts_per_tok: int = 4
    norm_topk_prob: bool = False

    @classmethod
    def from_hf(cls, hf_config) -> MoeConfig:
        return cls(**{f.name: getattr(hf_config, f.name) for f in fields(cls)})


class TopKRouter(nn.Module):
    """A linear score per expert; softmax over all E, then keep the k best. The kept weights sum to less
    than 1 unless norm_topk_prob renormalises them (Qwen2-MoE does not, Qwen3-MoE does)."""

    def __init__(self, cfg: MoeConfig):
        super().__init__()
        self.k, self.norm_topk_prob = cfg.num_experts_per_tok, cfg.norm_topk_prob
        self.weight = nn.Parameter(0.02 * torch.randn(cfg.num_experts, cfg.hidden_size))  # (E, C)

    def forward(self, x):  # x (N, C)
        logits = x @ self.weight.T  # (N, E): how well each token fits each expert
        # softmax in float32 even in a half-precision model: bfloat16 would round close experts into ties
        weights, experts = logits.float().softmax(dim=-1).topk(self.k, dim=-1)  # (N, k) each, best first
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)  # (N, k), summing to 1
        return logits, weights.to(x.dtype), experts


class Experts(nn.Module):
    """E SwiGLU MLPs in stacked tensors, gate and up projections concatenated: one tensor per kind
    instead of 3E small Linears, which is how grouped-matmul kernels want them.

    Routing as those kernels do it: each token's k choices become k rows, the rows are sorted by expert
    so that every expert's inputs form one contiguous block, each block goes through its expert, and the
    results are put back in (token, choice) order to be weighted and summed per token. A grouped matmul
    runs all the blocks in one launch; here a loop does it, one expert at a time."""

    def __init__(self, cfg: MoeConfig):
        super().__init__()
        E, C, I = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(0.02 * torch.randn(E, 2 * I, C))  # (E, 2I, C): rows [gate; up]
        self.down_proj = nn.Parameter(0.02 * torch.randn(E, C, I))  # (E, C, I)

    def forward(self, x, experts, weights):  # x (N, C); experts, weights (N, k)
        N, k = experts.shape
        choice = experts.flatten()  # (N*k,): row j is token j // k's choice number j % k
        by_expert = choice.argsort(stable=True)  # (N*k,): rows regrouped, expert 0's first
        rows = x[by_expert // k]  # (N*k, C): each row's token, in expert order
        sizes = choice.bincount(minlength=len(self.down_proj)).tolist()  # (E,) rows per expert, some maybe 0
        blocks = [self.expert(e, block) for e, block in enumerate(rows.split(sizes))]  # (n_e, C) each
        y = torch.empty_like(rows)  # (N*k, C)
        y[by_expert] = torch.cat(blocks)  # back in (token, choice) order
        return (y.view(N, k, -1) * weights[..., None]).sum(dim=1)  # (N, C): the weighted sum of k experts

    def expert(self, e: int, x):  # x (n_e, C): the rows routed to expert e
        gate, up = (x @ self.gate_up_proj[e].T).chunk(2, dim=-1)  # (n_e, I) each
        return (F.silu(gate) * up) @ self.down_proj[e].T  # (n_e, C)


class SharedExpertMLP(nn.Module):
    """A SwiGLU MLP (as in qwen2.py) that every token goes through: common knowledge lives here once
    instead of being copied into every routed expert."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):  # x (N, C)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (N, C)


class SparseMoeBlock(nn.Module):
    def __init__(self, cfg: MoeConfig):
        super().__init__()
        self.gate = TopKRouter(cfg)
        self.experts = Experts(cfg)
        self.shared_expert = SharedExpertMLP(cfg.hidden_size, cfg.shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)

    def forward(self, x):  # x (B, T, C) -> (B, T, C), and router logits (B*T, E) for the auxiliary loss
        B, T, C = x.shape
        x = x.reshape(B * T, C)  # (N, C): routing is per token, the sequence plays no part
        router_logits, weights, experts = self.gate(x)
        y = self.experts(x, experts, weights)  # (N, C)
        # a per-token sigmoid decides how much of the shared expert to add
        y = y + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)  # (N, C)
        return y.view(B, T, C), router_logits


def load_balancing_loss(router_logits, num_experts: int, top_k: int, attention_mask=None):
    """Switch Transformer's auxiliary loss (eqs. 4-6): E * sum_e f_e * P_e, with f_e the share of tokens
    routed to expert e and P_e the router's mean probability for it, over all layers. It is smallest
    when both are uniform; f comes from a top-k and carries no gradient, so the gradient lowers P
    where f is high, steering tokens away from overloaded experts. With k experts per token f sums to
    k rather than 1, in transformers' loss as here, so a perfectly balanced router scores k, not 1.

    router_logits: one (B*T, E) tensor per layer; attention_mask (B, T) leaves padding tokens out."""
    logits = torch.cat(list(router_logits))  # (layers*N, E)
    probs = logits.float().softmax(dim=-1)  # (layers*N, E)
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).sum(dim=1)  # (layers*N, E) 0/1
    if attention_mask is None:
        keep = probs.new_ones(len(probs))  # (layers*N,)
    else:
        keep = attention_mask.reshape(-1).float().repeat(len(router_logits))  # (layers*N,)
    f = (chosen * keep[:, None]).sum(dim=0) / keep.sum()  # (E,)
    P = (probs * keep[:, None]).sum(dim=0) / keep.sum()  # (E,)
    return num_experts * (f * P).sum()
