"""LoRA from scratch: fine-tune a frozen nn.Linear through a trainable low-rank update.

Paper: LoRA: Low-Rank Adaptation of Large Language Models, https://arxiv.org/abs/2106.09685
peft source: https://github.com/huggingface/peft/blob/main/src/peft/tuners/lora/layer.py (class Linear)

The fine-tuned weight is W + (alpha / r) * B A, with W (out, in) frozen, A (r, in) and B (out, r) trained,
and r much smaller than in and out: a 4096 x 4096 layer at r = 8 trains 65k numbers instead of 16.8M.
Parameter names are peft's without its adapter-name level: peft keeps a dict of adapters per layer
("lora_A.default.weight"), we keep one ("lora_A.weight").
Shapes: in and out the base layer's features, r the rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LoraConfig:
    # Field names follow peft's LoraConfig.
    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # the paper's choice: attention queries and values


class LoraLinear(nn.Module):
    """y = base_layer(x) + (alpha / r) * B(A(dropout(x))); merge() folds the update into the base weight."""

    def __init__(self, base_layer: nn.Linear, cfg: LoraConfig):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.lora_A = nn.Linear(base_layer.in_features, cfg.r, bias=False)
        self.lora_B = nn.Linear(cfg.r, base_layer.out_features, bias=False)
        self.lora_dropout = nn.Dropout(cfg.lora_dropout)
        # alpha / r: doubling r then leaves the update's size about the same, so the learning rate need not change.
        self.scaling = cfg.lora_alpha / cfg.r
        self.merged = False
        # B = 0, so training starts from exactly the base model; A random, so B's first gradient is not zero.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self):
        return self.scaling * self.lora_B.weight @ self.lora_A.weight  # (out, r) @ (r, in) = (out, in)

    def forward(self, x):  # x (..., in)
        y = self.base_layer(x)  # (..., out)
        if self.merged:  # the update already lives inside base_layer.weight
            return y
        # Through the rank-r bottleneck rather than building delta_weight: r * (in + out) per token, not in * out.
        return y + self.scaling * self.lora_B(self.lora_A(self.lora_dropout(x)))  # (..., out)

    @torch.no_grad()
    def merge(self):
        # One weight again, so inference costs what the base model costs.
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        # Subtracting restores W up to float rounding, so the adapter can be trained further or switched off.
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False


def wrap_linears(model: nn.Module, target_modules, wrap) -> nn.Module:
    """Freeze model and replace each nn.Linear whose name ends in one of target_modules by wrap(layer, name),
    as get_peft_model does (the lab's DoRA, IA3 and bottleneck adapters go in the same way)."""
    model.requires_grad_(False)
    targets = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, wrap(getattr(parent, child), child))
    return model


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Freeze model and wrap each nn.Linear whose name ends in one of cfg.target_modules, as get_peft_model does."""
    return wrap_linears(model, cfg.target_modules, lambda layer, _: LoraLinear(layer, cfg))
