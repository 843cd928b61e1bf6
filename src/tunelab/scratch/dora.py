"""DoRA from scratch: LoRA whose fine-tuned weight is split into a direction and a trained length per output.

Paper: DoRA: Weight-Decomposed Low-Rank Adaptation, https://arxiv.org/abs/2402.09353
peft source: https://github.com/huggingface/peft/blob/main/src/peft/tuners/lora/dora.py (DoraLinearLayer) and
https://github.com/huggingface/peft/blob/main/src/peft/tuners/lora/variants.py (DoraLinearVariant)

The fine-tuned weight is W' = m * (W + s B A) / ||W + s B A||, with W (out, in) frozen, A and B trained as in
LoRA (lora.py) and the magnitude m (out,) trained too. The norm is taken, for each output feature, over the
input features: row by row of the (out, in) weight (the paper writes the transposed (in, out) weight, hence its
"column-wise" norm). The paper found that full fine-tuning changes a weight's directions and lengths
independently while LoRA tends to change them together; giving the length its own parameter lets DoRA do both.
Parameter names are peft's without its adapter-name level, except the magnitude: peft keeps it as the weight of a
helper module, "lora_magnitude_vector.default.weight"; we keep the plain parameter "lora_magnitude_vector".
Shapes: in and out the base layer's features, r the rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.scratch.lora import LoraConfig, LoraLinear, wrap_linears


class DoraLinear(LoraLinear):
    """y = b + m / ||W + s B A|| * (W + s B A) x, with the norm a constant to autograd; merge() folds it into W."""

    def __init__(self, base_layer: nn.Linear, cfg: LoraConfig):
        super().__init__(base_layer, cfg)  # A random, B = 0, as in LoRA
        # m = ||W|| (B is 0), so W' = W: training starts from exactly the base model, as LoRA's does.
        self.lora_magnitude_vector = nn.Parameter(self.weight_norm().detach())  # (out,)
        self.merged_weight_norm = None  # ||W + s B A|| from before merge(), for unmerge()

    def weight_norm(self):
        """||W + s B A|| for each output feature, over the input features: (out,)."""
        return torch.linalg.norm(self.base_layer.weight + self.delta_weight(), dim=1)

    def forward(self, x):  # x (..., in)
        y = self.base_layer(x)  # W x + b, (..., out)
        if self.merged:  # m / ||.|| * (W + s B A) already lives inside base_layer.weight
            return y
        x = self.lora_dropout(x)
        # Section 4.3 of the paper: treat the norm as a constant. The gradients are then no longer exact, but
        # backward need not go through the norm, which saved a quarter of the training memory on LLaMA in the
        # paper, with no visible loss of accuracy.
        scale = self.lora_magnitude_vector / self.weight_norm().detach()  # (out,)
        # The same as b + scale * (W x + s B A x), written as a correction on top of the base layer's output, as
        # peft writes it: with dropout (training), the frozen W x + b keeps the whole input and only the correction
        # sees the dropped one. Without dropout (eval), the two are equal.
        lora = self.scaling * self.lora_B(self.lora_A(x))  # s B A x, (..., out)
        return y + (scale - 1) * F.linear(x, self.base_layer.weight) + scale * lora

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            # Kept: the merged weight's rows have norm |m|, so ||W + s B A|| cannot be read back from it.
            self.merged_weight_norm = self.weight_norm()
            scale = self.lora_magnitude_vector / self.merged_weight_norm  # (out,)
            self.base_layer.weight.copy_(scale[:, None] * (self.base_layer.weight + self.delta_weight()))
            self.merged = True  # the bias is left as it is: DoRA rescales W x, not W x + b

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            scale = self.lora_magnitude_vector / self.merged_weight_norm
            self.base_layer.weight.copy_(self.base_layer.weight / scale[:, None] - self.delta_weight())
            self.merged = False


def apply_dora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Freeze model and wrap each nn.Linear whose name ends in one of cfg.target_modules, as
    get_peft_model(LoraConfig(use_dora=True)) does."""
    return wrap_linears(model, cfg.target_modules, lambda layer, _: DoraLinear(layer, cfg))
