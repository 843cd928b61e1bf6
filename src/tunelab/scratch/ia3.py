"""(IA)3 from scratch: fine-tune a frozen model by learning one vector per layer that rescales its activations.

Paper: Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning (T-Few),
https://arxiv.org/abs/2205.05638 ("Infused Adapter by Inhibiting and Amplifying Inner Activations")
peft source: https://github.com/huggingface/peft/blob/main/src/peft/tuners/ia3/layer.py (class Linear)

The paper rescales three activations with learned vectors, elementwise: the keys and the values of attention
(the outputs of k_proj and v_proj) and the FFN's intermediate activation (the input of down_proj). As peft does,
one wrapper does both: a layer is either scaled at its output (keys, values) or, when it is a "feedforward"
layer, at its input. The vectors start at 1, so training starts from exactly the base model. A Llama-2-7B layer
trains 4096 + 4096 + 11008 = 19,200 numbers, seven times fewer than LoRA at r = 8 on q_proj and v_proj (131,072).
Parameter names are peft's without its adapter-name level: peft keeps a dict of vectors per layer
("ia3_l.default"), we keep one ("ia3_l").
Shapes: in and out the base layer's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.scratch.lora import wrap_linears


@dataclass
class IA3Config:
    # Field names follow peft's IA3Config; the defaults are the paper's, for the Llama family (Qwen2 too).
    target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
    feedforward_modules: tuple[str, ...] = ("down_proj",)  # scaled at their input; must be among target_modules


class IA3Linear(nn.Module):
    """y = base_layer(x) * l (l of size out), or for a feedforward layer y = base_layer(x * l) (l of size in)."""

    def __init__(self, base_layer: nn.Linear, is_feedforward: bool):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.is_feedforward = is_feedforward
        # peft's shapes, (1, in) or (out, 1): weight * ia3_l then scales W's columns (the inputs) or its rows
        # (the outputs), so merge() is the same broadcast multiply either way.
        shape = (1, base_layer.in_features) if is_feedforward else (base_layer.out_features, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape))
        self.merged = False

    def forward(self, x):  # x (..., in)
        if self.merged:  # the scaling already lives inside base_layer
            return self.base_layer(x)
        if self.is_feedforward:
            return self.base_layer(x * self.ia3_l.flatten())  # (..., out)
        return self.base_layer(x) * self.ia3_l.flatten()  # the bias is scaled too: (W x + b) * l

    @torch.no_grad()
    def merge(self):
        # W x + b after scaling the input is W diag(l) x + b: the bias stays. Scaling the output, the bias scales too.
        if not self.merged:
            self.base_layer.weight *= self.ia3_l
            if not self.is_feedforward and self.base_layer.bias is not None:
                self.base_layer.bias *= self.ia3_l.flatten()
            self.merged = True


def apply_ia3(model: nn.Module, cfg: IA3Config) -> nn.Module:
    """Freeze model and wrap each nn.Linear whose name ends in one of cfg.target_modules, as get_peft_model does;
    those ending in one of cfg.feedforward_modules are scaled at their input."""
    if not set(cfg.feedforward_modules) <= set(cfg.target_modules):
        raise ValueError("feedforward_modules must be a subset of target_modules")  # peft refuses them too
    return wrap_linears(model, cfg.target_modules,
                        lambda layer, name: IA3Linear(layer, is_feedforward=name in cfg.feedforward_modules))
