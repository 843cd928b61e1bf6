"""tunelab.scratch.reward against TRL's own reward-model loss: RewardTrainer.compute_loss, run on the same rewards.

TRL computes the loss inside the trainer's `compute_loss(model, inputs)`, with no standalone function to call,
so we call that method on a stand-in for the trainer: just the attributes the method reads, and a model that
returns the rewards we choose as its (2B, 1) logits, chosen rows first, as TRL's collator batches them.
Everything from the logits to the loss and the logged accuracy and margin is TRL's code.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch
from torch import nn
from trl.trainer.reward_trainer import RewardTrainer

from tunelab.parity import Check
from tunelab.parity.dpo import _one_process
from tunelab.scratch.reward import reward_loss

B = 6  # pairs


class _RewardsModel(nn.Module):
    """Stands in for the reward model: whatever the input, it returns the rewards we chose as its logits."""

    def __init__(self, rewards):
        super().__init__()
        self.rewards = rewards  # (2B,): chosen rows, then rejected rows

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.rewards.unsqueeze(-1))  # (2B, 1): one label, the reward


def _trl(chosen, rejected, margin=None, center_rewards_coefficient=None):
    """TRL's reward loss and logged metrics for rewards (B,) each."""
    model = _RewardsModel(torch.cat([chosen, rejected])).eval()  # eval: TRL then skips counting training tokens
    trainer = SimpleNamespace(
        model=model, args=SimpleNamespace(center_rewards_coefficient=center_rewards_coefficient),
        accelerator=SimpleNamespace(gather=_one_process, gather_for_metrics=_one_process),
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * B, 3, dtype=torch.long), "attention_mask": torch.ones(2 * B, 3)}
    if margin is not None:
        inputs["margin"] = margin
    loss = RewardTrainer.compute_loss(trainer, model, inputs)
    return loss, trainer._metrics["eval"]


def _rewards():
    torch.manual_seed(0)
    chosen, rejected = (torch.randn(2, B) * 2).unbind(0)  # (B,) each; some pairs ranked wrong, as in training
    return chosen, rejected


def loss_bradley_terry() -> float:
    chosen, rejected = _rewards()
    expected, _ = _trl(chosen, rejected)
    return (reward_loss(chosen, rejected).loss - expected).abs().item()


def loss_margin_centered() -> float:
    chosen, rejected = _rewards()
    margin = torch.rand(B)  # (B,)
    expected, _ = _trl(chosen, rejected, margin=margin, center_rewards_coefficient=0.01)
    got = reward_loss(chosen, rejected, margin=margin, center_rewards_coefficient=0.01).loss
    return (got - expected).abs().item()


def metrics() -> float:
    chosen, rejected = _rewards()
    _, logged = _trl(chosen, rejected)
    out = reward_loss(chosen, rejected)
    ours = torch.stack([out.accuracy, out.margin])
    theirs = torch.tensor([logged["accuracy"][0], logged["margin"][0]])
    return (ours - theirs).abs().max().item()


CHECKS = [
    Check("reward loss bradley-terry", "trl RewardTrainer.compute_loss", loss_bradley_terry, 1e-6),
    Check("reward loss margin + centering", "trl RewardTrainer.compute_loss (margin, center 0.01)",
          loss_margin_centered, 1e-6),
    Check("reward accuracy and margin", "trl RewardTrainer logged accuracy, margin", metrics, 1e-6),
]
