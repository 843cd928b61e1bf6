"""tunelab.scratch.lora against peft's LoRA (get_peft_model) on a tiny two-layer MLP with the same weights."""

from __future__ import annotations

import copy

import peft
import torch
from torch import nn

from tunelab.parity import Check
from tunelab.scratch import lora as scratch

TARGETS = ("fc1", "fc2")


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _pair():
    """peft's LoRA model and ours, holding the same base weights and the same A and B, in eval mode."""
    torch.manual_seed(0)
    base = _MLP()
    ours = scratch.apply_lora(copy.deepcopy(base), scratch.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                                       target_modules=TARGETS))
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                       target_modules=list(TARGETS)))
    for name in TARGETS:
        # peft starts B at zero, where the adapter adds nothing and any bug in it would go unseen.
        nn.init.normal_(theirs.base_model.model.get_submodule(name).lora_B["default"].weight)
    # peft's keys are ours behind a "base_model.model." prefix and with the adapter's name, "default", inside.
    state = {k.removeprefix("base_model.model.").replace(".default.", "."): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return ours.eval(), theirs.eval()


def _weights(model: nn.Module):
    return torch.cat([model.get_submodule(f"{name}.base_layer").weight.flatten() for name in TARGETS])


def forward() -> float:
    ours, theirs = _pair()
    x = torch.randn(3, 8)
    return (ours(x) - theirs(x)).abs().max().item()


def merge() -> float:
    ours, theirs = _pair()
    theirs.merge_adapter()
    for name in TARGETS:
        ours.get_submodule(name).merge()
    x = torch.randn(3, 8)
    return max((_weights(ours) - _weights(theirs.base_model.model)).abs().max().item(),
               (ours(x) - theirs(x)).abs().max().item())


def unmerge() -> float:
    """The restored base weights, and the outputs: once unmerged, the adapter must be applied on the side
    again (a layer still marked merged would return the bare base model's output)."""
    ours, theirs = _pair()
    theirs.merge_adapter()
    theirs.unmerge_adapter()
    for name in TARGETS:
        ours.get_submodule(name).merge()
        ours.get_submodule(name).unmerge()
    x = torch.randn(3, 8)
    return max((_weights(ours) - _weights(theirs.base_model.model)).abs().max().item(),
               (ours(x) - theirs(x)).abs().max().item())


CHECKS = [
    Check("lora forward", "peft get_peft_model(LoraConfig)", forward, 1e-6),
    Check("lora merge", "peft merge_adapter: weights and outputs", merge, 1e-6),
    Check("lora unmerge", "peft merge_adapter then unmerge_adapter: weights and outputs", unmerge, 1e-6),
]
