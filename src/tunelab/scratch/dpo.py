"""The DPO loss from scratch: preference tuning as a classification of (chosen, rejected) pairs.

Paper: Direct Preference Optimization, https://arxiv.org/abs/2305.18290 (equation 7)
Label smoothing: conservative DPO (cDPO), https://ericmitchell.ai/cdpo.pdf
TRL source: https://github.com/huggingface/trl/blob/main/trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss)

DPO needs no reward model: the policy's implicit reward for a completion y is beta * log(pi(y) / pi_ref(y)),
how much more likely the policy makes y than the frozen reference model does. The loss is a logistic
regression saying "the chosen completion's reward beats the rejected one's". Inputs are sequence log-probs:
the sum of the log-probs of a completion's tokens given its prompt, one number per pair. Shapes: B pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DPOOutput:
    loss: torch.Tensor  # () mean over pairs
    chosen_rewards: torch.Tensor  # (B,) detached: for logging, not for gradients
    rejected_rewards: torch.Tensor  # (B,)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta: float = 0.1, label_smoothing: float = 0.0) -> DPOOutput:
    """-log sigmoid(r_chosen - r_rejected), where r = beta * (log pi - log pi_ref); each input (B,).

    beta: how far the policy may drift from the reference; small beta tolerates a larger drift for the same loss.
    label_smoothing: eps, the assumed chance that a pair's preference label is flipped (cDPO); the loss becomes
    the cross-entropy against the soft label (1 - eps, eps), so it stops pushing the margin to infinity.
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (B,)
    margin = chosen_rewards - rejected_rewards  # (B,)
    # logsigmoid, not log(sigmoid()): sigmoid(-30) rounds to 0 in float32 and its log to -inf.
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)  # (B,)
    return DPOOutput(losses.mean(), chosen_rewards.detach(), rejected_rewards.detach())
