"""GRPO from scratch: PPO's clipped objective with a baseline taken from a group of answers to the same prompt.

Paper: DeepSeekMath, https://arxiv.org/abs/2402.03300 (section 4.1: equation 3 the objective, equation 4 the KL
estimator, 4.1.2 the group-normalized advantage)
Token-level loss ("dapo"): DAPO, https://arxiv.org/abs/2503.14476 (section 3.3); asymmetric clip: same, section 3.1
TRL source: https://github.com/huggingface/trl/blob/main/trl/trainer/grpo_trainer.py
(GRPOTrainer._generate_and_score_completions for the advantages, GRPOTrainer._compute_loss for the loss)

PPO needs a learned value model to tell a good completion from a lucky one. GRPO drops it: sample G completions
per prompt, score each, and call a completion good by how far its reward sits above the group's mean, in units
of the group's standard deviation. Every token of a completion gets that one advantage. The policy then raises
the log-probs of above-average completions and lowers the rest, with PPO's clipping so that one batch cannot
push the probability ratio pi / pi_old far from 1. Shapes: N = prompts * G completions, T completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("dapo", "grpo")


def group_advantages(rewards, num_generations: int, scale_rewards: str = "group", eps: float = 1e-4):
    """(r - mean of r's group) / (std + eps) for rewards (N,), grouped as G = num_generations consecutive entries.

    scale_rewards: "group" divides by the group's std (the paper), "batch" by the std of all N rewards (a steadier
    scale when a group's rewards are nearly equal; PPO Lite, https://arxiv.org/abs/2508.08221), "none" not at all
    (Dr. GRPO, https://arxiv.org/abs/2503.20783: dividing by a small std makes prompts that are too easy or too hard
    count most). The std is the unbiased one (divides by G - 1), as TRL's nanstd.
    eps: keeps a group whose rewards are all equal at advantage 0 / eps = 0 instead of 0 / 0.
    """
    grouped = rewards.view(-1, num_generations)  # (N / G, G): one row per prompt
    centered = (grouped - grouped.mean(dim=1, keepdim=True)).flatten()  # (N,)
    if scale_rewards == "none":
        return centered
    if scale_rewards == "group":
        std = grouped.std(dim=1).repeat_interleave(num_generations)  # (N,)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)  # (N,)
    else:
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', not {scale_rewards!r}")
    return centered / (std + eps)  # (N,)


@dataclass
class GRPOOutput:
    loss: torch.Tensor  # ()
    per_token_loss: torch.Tensor  # (N, T) before masking and aggregation
    clip_ratio: torch.Tensor  # () detached: share of completion tokens whose gradient the clip switched off
    kl: torch.Tensor | None  # () detached: mean per-token KL to the reference, None when beta = 0


def k3_kl(logps, ref_logps):
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens alone: e^d - d - 1 with d = log pi_ref - log pi.

    It is never negative (e^d >= 1 + d), unlike the plain estimate -d, yet its mean under pi is still the exact KL:
    E[e^d] = sum pi * pi_ref / pi = 1 and E[-d] = KL, so E[e^d - d - 1] = KL.
    """
    d = ref_logps - logps  # (N, T)
    return torch.exp(d) - d - 1  # (N, T)


def clipped_surrogate(logps, old_logps, advantages, epsilon_low: float = 0.2, epsilon_high: float | None = None):
    """PPO's per-token loss -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A); logps (N, T), A (N,)."""
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    # On the first step after sampling old_logps equal logps, so the ratio is 1 and the gradient is -A * grad log pi;
    # the clip only matters when a batch is reused (num_iterations > 1) and the policy has already moved.
    ratio = torch.exp(logps - old_logps)  # (N, T)
    clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high)  # (N, T)
    adv = advantages.unsqueeze(1)  # (N, 1): one advantage for every token of a completion
    # The min takes the pessimistic of the two: past the clip a good token (A > 0) gains nothing from a still
    # larger ratio, and a bad one (A < 0) is pushed down no further; below or inside the clip the raw ratio rules.
    return -torch.min(ratio * adv, clipped * adv), ratio  # (N, T) each


def grpo_loss(logps, old_logps, advantages, completion_mask, epsilon_low: float = 0.2,
              epsilon_high: float | None = None, beta: float = 0.0, ref_logps=None,
              loss_type: str = "dapo") -> GRPOOutput:
    """GRPO's loss from per-token log-probs (N, T) of the sampled completions; advantages (N,); mask (N, T).

    beta: weight of the k3 KL penalty to the reference model (needs ref_logps); TRL's default is 0, no reference.
    loss_type: how per-token losses become one number.
      "dapo" (TRL's default): sum over all completion tokens of the batch / their count, so every token weighs
        the same and a long completion counts for more than a short one.
      "grpo" (the paper): the mean over each completion's tokens, then the mean over completions, so a token of a
        short completion weighs more: short right answers and long wrong ones are favoured.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, not {loss_type!r}")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    per_token_loss, ratio = clipped_surrogate(logps, old_logps, advantages, epsilon_low, epsilon_high)  # (N, T)
    kl = None
    if beta != 0.0:
        per_token_kl = k3_kl(logps, ref_logps)  # (N, T)
        per_token_loss = per_token_loss + beta * per_token_kl  # (N, T)
    mask = completion_mask.to(per_token_loss.dtype)  # (N, T): 0 on padding after the end of a completion
    if loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    with torch.no_grad():
        adv = advantages.unsqueeze(1)  # (N, 1)
        # A token is clipped when the min picked the flat, clipped branch: gradient zero.
        clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))  # (N, T)
        clip_ratio = (clipped * mask).sum() / mask.sum().clamp(min=1.0)
        if beta != 0.0:
            kl = (per_token_kl * mask).sum() / mask.sum().clamp(min=1.0)
    return GRPOOutput(loss, per_token_loss, clip_ratio, kl)
