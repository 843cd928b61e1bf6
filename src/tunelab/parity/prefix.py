"""tunelab.scratch.prefix against peft's prefix tuning, on two copies of a tiny random Qwen2ForCausalLM
(grouped-query attention, 4 query heads sharing 2 key/value heads) with the same prefix weights."""

from __future__ import annotations

import copy

import peft
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tunelab.parity import Check
from tunelab.scratch.prefix import PrefixTuning

P = 3  # virtual tokens


def logits() -> float:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = Qwen2ForCausalLM(config).eval()
    ours = PrefixTuning(copy.deepcopy(base), num_virtual_tokens=P).eval()
    theirs = peft.get_peft_model(base, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)).eval()
    ours.prefix_encoder.load_state_dict(theirs.prompt_encoder["default"].state_dict(), strict=True)
    input_ids = torch.randint(0, 64, (2, 6))
    attention_mask = torch.ones(2, 6, dtype=torch.long)
    attention_mask[1, -2:] = 0  # right padding in the second row
    got = ours(input_ids, attention_mask=attention_mask).logits
    expected = theirs(input_ids=input_ids, attention_mask=attention_mask).logits
    return (got - expected).abs().max().item()


CHECKS = [
    Check("prefix tuning logits", "peft get_peft_model(PrefixTuningConfig), Qwen2", logits, 1e-5),
]
