"""Bottleneck adapters from scratch (Houlsby): small trained MLPs inserted into a frozen model.

Paper: Parameter-Efficient Transfer Learning for NLP, https://arxiv.org/abs/1902.00751
peft has no bottleneck adapter (the adapters library, https://github.com/adapter-hub/adapters, has them); this one
is checked against a hand-worked example (tests/test_scratch_basics.py) instead.

An adapter projects the hidden state down to a few features, applies a nonlinearity, projects back up and adds
the result to its input: x + up(GELU(down(x))). The paper puts one after each sublayer's output projection
(attention's and the FFN's), before the residual connection, and trains only the adapters (and, in the paper,
the LayerNorms, which this file leaves to the caller). At hidden 768 and size 64, an adapter is about 100k numbers,
some 2% of BERT-base over its 24 sublayers; unlike LoRA's update, it cannot be merged into a weight (GELU stands
in the way), so it costs a little at inference too.
Shapes: hidden the sublayer's output features, size the bottleneck's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tunelab.scratch.lora import wrap_linears


@dataclass
class BottleneckConfig:
    size: int = 64
    target_modules: tuple[str, ...] = ("o_proj", "down_proj")  # the sublayers' output projections, Llama family


class Bottleneck(nn.Module):
    """y = x + up(GELU(down(x))), the identity until up is trained."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.act = nn.GELU()
        self.up = nn.Linear(size, hidden)
        # up = 0 makes the adapter exactly the identity, so inserting it leaves the pretrained model's outputs as
        # they were and training starts from them (the paper starts both projections near zero and finds that a
        # near-identity start is needed for stable training). down stays random, so up's first gradient is not 0.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):  # x (..., hidden)
        return x + self.up(self.act(self.down(x)))  # (..., size) in the middle, (..., hidden) out


class BottleneckAfter(nn.Module):
    """A frozen output projection followed by a trained Bottleneck: y = adapter(base_layer(x))."""

    def __init__(self, base_layer: nn.Linear, size: int):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.adapter = Bottleneck(base_layer.out_features, size)

    def forward(self, x):  # x (..., in)
        return self.adapter(self.base_layer(x))  # (..., out); the model adds the residual after this


def apply_bottleneck(model: nn.Module, cfg: BottleneckConfig) -> nn.Module:
    """Freeze model and put a Bottleneck after each nn.Linear whose name ends in one of cfg.target_modules."""
    return wrap_linears(model, cfg.target_modules, lambda layer, _: BottleneckAfter(layer, cfg.size))
