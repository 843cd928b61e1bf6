"""The reward-model loss from scratch: a Bradley-Terry model of which of two completions a person preferred.

Paper: Training language models to follow instructions with human feedback (InstructGPT),
https://arxiv.org/abs/2203.02155 (section 3.5, equation 1); Bradley & Terry (1952) for the pairwise model.
Margin: Llama 2, https://arxiv.org/abs/2307.09288 (section 3.2.2, equation 2)
Centering: Eisenstein et al., Helping or Herding?, https://arxiv.org/abs/2312.09244 (equation 2)
TRL source: https://github.com/huggingface/trl/blob/main/trl/trainer/reward_trainer.py (RewardTrainer.compute_loss)

A reward model maps (prompt, completion) to one number r. Bradley-Terry says the chance a person prefers
completion a over b is sigmoid(r_a - r_b), so training is a logistic regression on "chosen beats rejected":
only the difference of the two rewards matters, never their level. Inputs are the scalar rewards the model
gives the two completions of each pair (in transformers: a sequence-classification head with one label).
Shapes: B pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RewardOutput:
    loss: torch.Tensor  # () mean over pairs
    accuracy: torch.Tensor  # () detached: share of pairs where the chosen completion gets the higher reward
    margin: torch.Tensor  # () detached: mean of r_chosen - r_rejected


def reward_loss(chosen_rewards, rejected_rewards, margin=None,
                center_rewards_coefficient: float | None = None) -> RewardOutput:
    """-log sigmoid(r_chosen - r_rejected - margin), averaged over pairs; each input (B,).

    margin: (B,) how much better the chosen completion was rated (Llama 2's graded preferences); the loss keeps
    pushing until the reward gap exceeds it, so clearly better pairs get pulled further apart.
    center_rewards_coefficient: adds coef * mean((r_chosen + r_rejected)^2). The Bradley-Terry loss is blind to a
    shift of every reward by a constant, so the rewards can drift anywhere; this pulls their mean towards 0.
    """
    gap = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        gap = gap - margin  # (B,)
    # logsigmoid, not log(sigmoid()): sigmoid(-30) rounds to 0 in float32 and its log to -inf.
    loss = -F.logsigmoid(gap).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    with torch.no_grad():  # metrics to log, like TRL's accuracy and margin; the margin argument plays no part
        accuracy = (chosen_rewards > rejected_rewards).float().mean()
        mean_margin = (chosen_rewards - rejected_rewards).mean()
    return RewardOutput(loss, accuracy, mean_margin)
