"""tunelab.scratch.bottleneck against numbers worked out by hand (peft has no bottleneck adapter), and, at
initialisation, against the model it was inserted into.

The hand-worked example, also in tests/test_scratch_basics.py: hidden 2, size 1, down = [1, 1] with bias 0,
up = [2, -1] with bias [0.5, 0], so y = x + [2 g + 0.5, -g] with g = GELU(x1 + x2) = h Phi(h), Phi the standard
normal distribution function: GELU(1) = 0.841345, GELU(-1) = -(1 - 0.841345) = -0.158655, GELU(0) = 0.

    x = [ 1,    0   ]: y = [1 + 2.182689, 0 - 0.841345] = [ 3.182689, -0.841345]
    x = [-0.5, -0.5 ]: y = [-0.5 + 0.182689, -0.5 + 0.158655] = [-0.317311, -0.341345]
    x = [ 0,    0   ]: y = [0 + 0.5, 0 - 0] = [0.5, 0]
"""

from __future__ import annotations

import copy

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tunelab.parity import Check
from tunelab.scratch.bottleneck import Bottleneck, BottleneckConfig, apply_bottleneck

HAND_X = [[1.0, 0.0], [-0.5, -0.5], [0.0, 0.0]]
HAND_Y = [[3.182689, -0.841345], [-0.317311, -0.341345], [0.5, 0.0]]


def hand_worked() -> float:
    adapter = Bottleneck(hidden=2, size=1)
    with torch.no_grad():
        adapter.down.weight.copy_(torch.tensor([[1.0, 1.0]]))
        adapter.down.bias.zero_()
        adapter.up.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        adapter.up.bias.copy_(torch.tensor([0.5, 0.0]))
        return (adapter(torch.tensor(HAND_X)) - torch.tensor(HAND_Y)).abs().max().item()


def identity_at_init() -> float:
    """A freshly inserted adapter changes nothing: the logits of a tiny Qwen2 with and without them."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = Qwen2ForCausalLM(config).eval()
    ours = apply_bottleneck(copy.deepcopy(base), BottleneckConfig(size=8))
    input_ids = torch.randint(0, 64, (2, 6))
    return (ours(input_ids).logits - base(input_ids).logits).abs().max().item()


def tunelab_method() -> float:
    """The bottleneck `tunelab train` uses (tunelab.own_methods, trained weights) against the lab's, same weights:
    a tiny Qwen2's logits with non-zero adapters in both places."""
    from tunelab.config import Recipe
    from tunelab.own_methods import apply

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = Qwen2ForCausalLM(config).eval()
    ours = apply_bottleneck(copy.deepcopy(base), BottleneckConfig(size=8))
    recipe = Recipe()
    recipe.adapter.method, recipe.adapter.bottleneck_size = "bottleneck", 8
    theirs = apply(base, recipe)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, Bottleneck):
                torch.nn.init.normal_(module.up.weight)
                trained = theirs.get_submodule(name.removesuffix(".adapter") + ".bottleneck")
                trained.load_state_dict({k: v for k, v in module.state_dict().items()})
    input_ids = torch.randint(0, 64, (2, 6))
    return (ours(input_ids).logits - theirs(input_ids).logits).abs().max().item()


CHECKS = [
    # 1e-6: the expected numbers are written to 6 decimals
    Check("bottleneck hand-worked example", "hand-worked example (peft has no bottleneck adapter)", hand_worked,
          1e-6),
    Check("bottleneck at init is the identity", "transformers Qwen2ForCausalLM without the adapters",
          identity_at_init, 0.0),
    Check("bottleneck in tunelab train (own_methods)", "the lab's bottleneck with the same weights, Qwen2 logits",
          tunelab_method, 1e-6),
]
