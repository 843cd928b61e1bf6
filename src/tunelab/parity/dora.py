"""tunelab.scratch.dora against peft's DoRA (get_peft_model with LoraConfig(use_dora=True)) on a tiny two-layer
MLP with the same weights."""

from __future__ import annotations

import copy

import peft
import torch
from torch import nn

from tunelab.parity import Check
from tunelab.scratch import dora as scratch

TARGETS = ("fc1", "fc2")


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _pair():
    """peft's DoRA model and ours, holding the same base weights, A, B and magnitudes, in eval mode."""
    torch.manual_seed(0)
    base = _MLP()
    ours = scratch.apply_dora(copy.deepcopy(base), scratch.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                                       target_modules=TARGETS))
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, use_dora=True,
                                                       target_modules=list(TARGETS)))
    for name in TARGETS:
        # With B = 0 the magnitude equals ||W|| and DoRA is the identity; B set after the magnitude makes
        # m / ||W + s B A|| differ from 1, so the rescaling is exercised too.
        nn.init.normal_(theirs.base_model.model.get_submodule(name).lora_B["default"].weight)
    # peft's keys are ours behind a "base_model.model." prefix and with the adapter's name, "default", inside;
    # peft's magnitude is the weight of a helper module, ours a plain parameter.
    state = {k.removeprefix("base_model.model.").replace(".default.", ".").replace("vector.weight", "vector"): v
             for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return ours.eval(), theirs.eval()


def _weights(model: nn.Module):
    return torch.cat([model.get_submodule(f"{name}.base_layer").weight.flatten() for name in TARGETS])


def forward() -> float:
    ours, theirs = _pair()
    x = torch.randn(3, 8)
    return (ours(x) - theirs(x)).abs().max().item()


def gradients() -> float:
    """Gradients of A, B and the magnitude: peft detaches the norm (the paper's section 4.3), and the exact
    gradient, through the norm, would differ."""
    ours, theirs = _pair()
    x = torch.randn(3, 8)
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    grads = {k: p.grad for k, p in ours.named_parameters() if p.requires_grad}
    expected = {k.removeprefix("base_model.model.").replace(".default.", ".").replace("vector.weight", "vector"):
                p.grad for k, p in theirs.named_parameters() if p.requires_grad}
    if grads.keys() != expected.keys():  # a parameter trained on one side only
        return float("inf")
    return max((grads[k] - expected[k]).abs().max().item() for k in grads)


def training_forward() -> float:
    """In training mode, with dropout: the same random masks on both sides, so the outputs must agree, and they
    only do if the frozen W x + b sees the whole input and the DoRA correction the dropped one, as in peft."""
    ours, theirs = _pair()
    ours.train(), theirs.train()
    x = torch.randn(3, 8)
    torch.manual_seed(1)
    got = ours(x)
    torch.manual_seed(1)
    return (got - theirs(x)).abs().max().item()


def merge() -> float:
    ours, theirs = _pair()
    theirs.merge_adapter()
    for name in TARGETS:
        ours.get_submodule(name).merge()
    x = torch.randn(3, 8)
    return max((_weights(ours) - _weights(theirs.base_model.model)).abs().max().item(),
               (ours(x) - theirs(x)).abs().max().item())


def unmerge() -> float:
    """The restored base weights, and the outputs: unmerging needs the norm from before the merge."""
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
    Check("dora forward", "peft get_peft_model(LoraConfig(use_dora=True))", forward, 1e-6),
    Check("dora gradients of A, B, magnitude (norm detached)", "peft DoRA backward", gradients, 1e-5),
    Check("dora forward, training with dropout", "peft DoRA in train mode, same dropout masks", training_forward,
          1e-6),
    Check("dora merge", "peft merge_adapter: weights and outputs", merge, 1e-6),
    Check("dora unmerge", "peft merge_adapter then unmerge_adapter: weights and outputs", unmerge, 1e-6),
]
