"""Magnitude pruning of a run's linear layers: `tunelab prune RUN OUT --sparsity S [--structured heads|channels]`.

Unstructured (the default; Han et al. 2015, https://arxiv.org/abs/1506.02626): in every nn.Linear of the decoder
the share S of weights smallest in |w| become 0, layer by layer (torch.nn.utils.prune.l1_unstructured, made
permanent with prune.remove). The embeddings and the LM head stay dense. Shapes do not change: the saved model is
as large as before and, with dense kernels, as fast; the zeros are what a sparse kernel or a compressor would use.

Structured: whole units go, and the model shrinks (smaller matrices, fewer parameters, faster on any kernel):
- heads: key/value heads, each with the query heads that share it (its GQA group), so grouped attention still
  lines up; num_attention_heads and num_key_value_heads shrink, head_dim stays (written into the config);
- channels: MLP channels (a row of gate_proj and up_proj and the matching column of down_proj); intermediate_size
  shrinks.
A unit's score is the sum of its squared weights in every matrix it owns (q, k, v rows and o columns of a group;
gate and up rows and the down column of a channel); the lowest go. The same number goes in every layer, because
a Llama-style config holds one head count and one intermediate size (LLM-Pruner, Ma et al. 2023, and Minitron,
Muralidharan et al. 2024, prune the same way, by importance, before distilling to recover). The kept weights are
loaded into a fresh model built from the changed config (strict), so the result is an ordinary checkpoint that
`AutoModelForCausalLM.from_pretrained` loads alone.
"""

from __future__ import annotations

import copy
import re

import torch
import transformers
from torch.nn.utils import prune

from tunelab.errors import UserError

STRUCTURES = ("heads", "channels")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def pruned_linears(model) -> list[torch.nn.Linear]:
    """The linear layers pruning acts on: all but the LM head (embeddings are not nn.Linear)."""
    head = model.get_output_embeddings()
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]


def unstructured(model, sparsity: float) -> dict:
    """Zero the smallest-magnitude share `sparsity` of each linear layer's weights, in place."""
    layers = pruned_linears(model)
    for layer in layers:
        prune.l1_unstructured(layer, "weight", amount=sparsity)
        prune.remove(layer, "weight")  # weight = weight_orig * mask, as a plain parameter again
    return {"pruned_layers": len(layers), "zero_fraction": zero_fraction(model)}


def zero_fraction(model) -> float:
    layers = pruned_linears(model)
    return sum(int((m.weight == 0).sum()) for m in layers) / sum(m.weight.numel() for m in layers)


def layer_prefixes(model, at: str) -> list[str]:
    """'model.layers.0.', ... of a decoder with Llama-style attention and MLP names (Llama, Qwen2, Mistral...)."""
    state = model.state_dict()
    prefixes = sorted({m.group(1) for k in state if (m := re.match(r"(.*\.layers\.\d+\.)self_attn\.q_proj\.weight$", k))},
                      key=lambda p: int(p.rstrip(".").rsplit(".", 1)[1]))
    needed = [f"self_attn.{n}.weight" for n in ATTENTION] + [f"mlp.{n}.weight" for n in MLP]
    if not prefixes or any(p + n not in state for p in prefixes for n in needed):
        raise UserError(f"{at}: structured pruning knows decoders with Llama-style layers (self_attn.q_proj, k_proj, "
                        f"v_proj, o_proj; mlp.gate_proj, up_proj, down_proj); {model.config.model_type} is not one. "
                        f"Unstructured pruning (no --structured) works on any model")
    return prefixes


def units_to_remove(sparsity: float, count: int, unit: str, at: str) -> int:
    """How many of `count` units a sparsity removes (rounded down), at least one."""
    remove = int(sparsity * count + 1e-9)
    if remove == 0:
        raise UserError(f"{at}: --sparsity {sparsity:g} removes no {unit} of {count} per layer; the smallest step is "
                        f"{1 / count:.4g}")
    return remove


def check_structured(model, sparsity: float, unit: str, at: str) -> list[str]:
    """The layers' name prefixes, once it is known that the model has them and that `sparsity` removes a unit."""
    prefixes = layer_prefixes(model, at)
    if unit == "heads":
        units_to_remove(sparsity, model.config.num_key_value_heads, "key/value head", at)
    else:
        units_to_remove(sparsity, model.config.intermediate_size, "MLP channel", at)
    return prefixes


def _kept(score: torch.Tensor, remove: int) -> torch.Tensor:
    """Indices of the units with the largest scores, in their original order."""
    return score.topk(len(score) - remove).indices.sort().values


def structured(model, sparsity: float, unit: str, at: str):
    """A new, smaller model: `model` without the lowest-scoring share `sparsity` of its KV head groups (unit=heads)
    or MLP channels (unit=channels), the same number in every layer."""
    prefixes = check_structured(model, sparsity, unit, at)
    config = copy.deepcopy(model.config)
    state = dict(model.state_dict())
    if unit == "heads":
        kv, heads = config.num_key_value_heads, config.num_attention_heads
        group = heads // kv  # query heads per key/value head
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        remove = units_to_remove(sparsity, kv, "key/value head", at)
        for prefix in prefixes:
            _remove_head_groups(state, prefix + "self_attn.", kv, group, head_dim, remove)
        config.num_key_value_heads, config.num_attention_heads = kv - remove, (kv - remove) * group
        config.head_dim = head_dim  # no longer hidden_size / num_attention_heads
    else:
        remove = units_to_remove(sparsity, config.intermediate_size, "MLP channel", at)
        for prefix in prefixes:
            _remove_channels(state, prefix + "mlp.", remove)
        config.intermediate_size -= remove
    smaller = transformers.AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    smaller.load_state_dict(state, strict=True)
    smaller.generation_config = copy.deepcopy(model.generation_config)
    return smaller.eval()


def _remove_head_groups(state: dict, at: str, kv: int, group: int, head_dim: int, remove: int) -> None:
    """Drop `remove` key/value heads and their query groups from one attention layer's tensors in `state`.
    q_proj.weight is (kv * group * head_dim, hidden): grouped as (kv, group * head_dim, hidden), a group's query
    heads being contiguous (repeat_kv gives query head h the key/value head h // group); o_proj.weight is
    (hidden, kv * group * head_dim), its columns grouped the same way."""
    q = state[at + "q_proj.weight"].unflatten(0, (kv, -1))  # (kv, group * hd, hidden)
    k = state[at + "k_proj.weight"].unflatten(0, (kv, -1))  # (kv, hd, hidden)
    v = state[at + "v_proj.weight"].unflatten(0, (kv, -1))  # (kv, hd, hidden)
    o = state[at + "o_proj.weight"].unflatten(1, (kv, -1))  # (hidden, kv, group * hd)
    score = q.pow(2).sum((1, 2)) + k.pow(2).sum((1, 2)) + v.pow(2).sum((1, 2)) + o.pow(2).sum((0, 2))  # (kv,)
    keep = _kept(score, remove)
    for name in ("q_proj", "k_proj", "v_proj"):  # their output rows (and biases) are per head
        for part in ("weight", "bias"):
            key = f"{at}{name}.{part}"
            if key in state:
                state[key] = state[key].unflatten(0, (kv, -1))[keep].flatten(0, 1).contiguous()
    state[at + "o_proj.weight"] = o[:, keep].flatten(1, 2).contiguous()  # o_proj's bias is per output: kept


def _remove_channels(state: dict, at: str, remove: int) -> None:
    """Drop `remove` channels from one MLP: rows of gate_proj and up_proj (I, hidden), columns of down_proj
    (hidden, I)."""
    gate, up, down = (state[f"{at}{n}.weight"] for n in MLP)
    keep = _kept(gate.pow(2).sum(1) + up.pow(2).sum(1) + down.pow(2).sum(0), remove)  # (I - remove,)
    for name in ("gate_proj", "up_proj"):
        for part in ("weight", "bias"):
            key = f"{at}{name}.{part}"
            if key in state:
                state[key] = state[key][keep].contiguous()
    state[at + "down_proj.weight"] = down[:, keep].contiguous()
