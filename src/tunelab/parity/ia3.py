"""tunelab.scratch.ia3 against peft's (IA)3 (get_peft_model with IA3Config), on two copies of a tiny random
LlamaForCausalLM with biases in attention and MLP, scaling k_proj and v_proj at their output and down_proj at
its input. Llama rather than Qwen2: Qwen2's down_proj has no bias, and merging must leave a feedforward layer's
bias alone while it scales the others'."""

from __future__ import annotations

import copy

import peft
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from tunelab.parity import Check
from tunelab.scratch import ia3 as scratch

TARGETS, FEEDFORWARD = ("k_proj", "v_proj", "down_proj"), ("down_proj",)


def _pair():
    """peft's (IA)3 model and ours, holding the same base weights and the same (IA)3 vectors, in eval mode."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attention_bias=True, mlp_bias=True)
    base = LlamaForCausalLM(config)
    for module in base.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.normal_(module.bias, std=0.5)  # transformers starts biases at 0, where scaling one shows nothing
    ours = scratch.apply_ia3(copy.deepcopy(base), scratch.IA3Config(TARGETS, FEEDFORWARD))
    theirs = peft.get_peft_model(base, peft.IA3Config(target_modules=list(TARGETS),
                                                      feedforward_modules=list(FEEDFORWARD)))
    for name, module in theirs.named_modules():
        if isinstance(module, peft.tuners.ia3.Linear):
            # peft starts the vectors at 1, where (IA)3 changes nothing and any bug in it would go unseen.
            nn.init.normal_(module.ia3_l["default"], mean=1.0, std=0.5)
    # peft's keys are ours behind a "base_model.model." prefix and with the adapter's name, "default", after.
    state = {k.removeprefix("base_model.model.").removesuffix(".default"): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return ours.eval(), theirs.eval()


def _weights(model: nn.Module):
    layers = [m.base_layer for m in model.modules() if hasattr(m, "ia3_l")]
    return torch.cat([p.flatten() for layer in layers for p in layer.parameters()])  # weights and biases


def logits() -> float:
    ours, theirs = _pair()
    input_ids = torch.randint(0, 64, (2, 6))
    return (ours(input_ids).logits - theirs(input_ids=input_ids).logits).abs().max().item()


def merge() -> float:
    ours, theirs = _pair()
    theirs.merge_adapter()
    for module in ours.modules():
        if isinstance(module, scratch.IA3Linear):
            module.merge()
    input_ids = torch.randint(0, 64, (2, 6))
    return max((_weights(ours) - _weights(theirs.base_model.model)).abs().max().item(),
               (ours(input_ids).logits - theirs(input_ids=input_ids).logits).abs().max().item())


CHECKS = [
    Check("ia3 logits (k, v scaled at the output, down_proj at its input)", "peft get_peft_model(IA3Config), Llama",
          logits, 1e-5),
    Check("ia3 merge", "peft merge_adapter: weights, biases and logits", merge, 1e-5),
]
