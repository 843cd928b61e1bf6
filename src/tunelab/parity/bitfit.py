"""tunelab.scratch.bitfit against peft's BEFT (get_peft_model with BeftConfig): one SGD step on a tiny MLP
(Linear, LayerNorm, ReLU, Linear), from the same weights, on the same batch and loss, then the same outputs.

BitFit trains the biases b themselves; BEFT freezes them and trains a delta d, starting at 0, added to each
target Linear's output. The gradient of d is the gradient of b (both are added to the same output), so after a
step of plain SGD, b - lr * g = b + (0 - lr * g): the same model. (Not so with weight decay, which pulls b towards
0 in one and d towards 0 in the other.) BEFT only covers Linear layers, so the comparison with peft is for the
Linear biases; the LayerNorm's bias, which BitFit trains too, is unfrozen by hand on the peft side and trained
there as a plain parameter, so a LayerNorm bias left frozen (or a weight left trainable) by BitFit still fails.
"""

from __future__ import annotations

import copy

import peft
import torch
from torch import nn

from tunelab.parity import Check
from tunelab.scratch.bitfit import apply_bitfit


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def _sgd_step(model: nn.Module, x, target):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    nn.functional.mse_loss(model(x), target).backward()
    optimizer.step()


def one_step() -> float:
    torch.manual_seed(0)
    base = _MLP()
    nn.init.normal_(base.norm.bias)  # LayerNorm starts its bias at 0; a random one is a stronger test
    ours = copy.deepcopy(base)
    apply_bitfit(ours)
    theirs = peft.get_peft_model(base, peft.BeftConfig(target_modules=["fc1", "fc2"]))
    theirs.base_model.model.norm.bias.requires_grad_(True)  # BEFT does not cover LayerNorm: see the docstring
    x, target = torch.randn(5, 8), torch.randn(5, 4)
    _sgd_step(ours, x, target)
    _sgd_step(theirs, x, target)
    x = torch.randn(5, 8)
    return (ours(x) - theirs(x)).abs().max().item()


CHECKS = [
    Check("bitfit one SGD step (Linear biases vs BEFT deltas)", "peft get_peft_model(BeftConfig), MLP", one_step,
          1e-6),
]
