"""Fine-tuning methods PEFT does not have in the form the seeds mean, for any transformers model.

- bitfit: only the bias terms train, every Linear and norm bias the model has (Ben Zaken et al., 2021). PEFT's
  bias tuner (BEFT, peft 0.21) is another method: it adds a new bias vector to chosen Linear layers, also to
  layers that had none (Qwen2's MLP), and leaves the norms' biases alone.
- embedding: only the input token embeddings train (the seeds' PreEmbed). PEFT's trainable_tokens trains
  chosen rows through a separate delta; with every row chosen it is this, plus a second vocabulary-sized lookup.
- last_layers: only the top `adapter.trainable_layers` blocks train (LLaMA-Factory's freeze tuning).
- bottleneck: Houlsby et al. (2019) adapters, x + up(gelu(down(x))), after each block's attention output
  projection and after its FFN, with the norms trained too. PEFT has no bottleneck adapter.

A fresh task head (a module named classifier or score) trains in every method. A run saves only what trained,
in `adapter/trained.safetensors`, beside `adapter/tunelab_method.json`; loading applies the method to the base
again and loads those tensors. The first three change the base's own weights, so their runs load as plain
models (merged by construction); a bottleneck adapter holds a non-linearity and cannot be merged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.config import Recipe
from tunelab.errors import UserError

OWN = ("bitfit", "embedding", "last_layers", "bottleneck")
FOLDED = ("bitfit", "embedding", "last_layers")  # they train the base's own weights
HEADS = ("classifier", "score")
METHOD_FILE, TENSORS_FILE = "tunelab_method.json", "trained.safetensors"
# Where a bottleneck goes: the first set whose names a model has (decoders like Qwen2 and Llama, BERT, T5).
# BERT's attention output and FFN output are both `...output.dense`.
BOTTLENECK_PLACES = (("o_proj", "down_proj"), ("output.dense",),
                     ("SelfAttention.o", "EncDecAttention.o", "DenseReluDense.wo"))


class Bottleneck(nn.Module):
    """x + up(gelu(down(x))). `up` starts at zero, so the adapted model starts as the pretrained one."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


class WithBottleneck(nn.Module):
    """A projection followed by its bottleneck adapter, in place of the projection."""

    def __init__(self, base_layer: nn.Linear, size: int):
        super().__init__()
        self.base_layer = base_layer
        self.bottleneck = Bottleneck(base_layer.out_features, size).to(base_layer.weight.device,
                                                                       base_layer.weight.dtype)

    @property
    def weight(self) -> torch.Tensor:  # models read their projections' weights (T5 casts to wo.weight's dtype)
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.base_layer(x))


def _norms(model: nn.Module) -> list[str]:
    """The names of the norm layers (LayerNorm, RMSNorm, T5LayerNorm...)."""
    return [name for name, m in model.named_modules() if name and "Norm" in type(m).__name__]


def norm_names(model: nn.Module) -> list[str]:
    """The last name part of every norm layer, as PEFT's target_modules."""
    return sorted({name.rsplit(".", 1)[-1] for name in _norms(model)})


def blocks(model: nn.Module) -> list[str]:
    """The names of the transformer blocks, from the input up (T5: the encoder's, then the decoder's): the
    items of the outermost ModuleLists (a T5 block's own list of sublayers is inside one)."""
    lists = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    outer = [name for name in lists if not any(name.startswith(other + ".") for other in lists if other != name)]
    return [f"{name}.{i}" for name in outer for i in range(len(model.get_submodule(name)))]


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def bottleneck_targets(model: nn.Module) -> list[str]:
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for place in BOTTLENECK_PLACES:
        found = [name for name in linears if any(name.endswith("." + p) for p in place)]
        if found:
            return found
    return []


def check_fits(recipe: Recipe, model: nn.Module) -> None:
    method, kind = recipe.adapter.method, model.config.model_type
    where = recipe.origin("adapter.method")
    if method == "bitfit" and not any(name.endswith("bias") for name, _ in model.named_parameters()
                                      if not _within(name, HEADS)):
        raise UserError(f"{where}: {kind} has no bias terms, so bitfit would train nothing; use ln_tuning or lora")
    if method in ("last_layers", "gradual_unfreeze") and not blocks(model):
        raise UserError(f"{where}: found no list of transformer blocks in {kind}; use lora or full")
    if method == "last_layers" and recipe.adapter.trainable_layers > len(blocks(model)):
        raise UserError(f"{recipe.origin('adapter.trainable_layers')}: adapter.trainable_layers = "
                        f"{recipe.adapter.trainable_layers}, but {kind} has {len(blocks(model))} blocks")
    if method == "bottleneck" and not bottleneck_targets(model):
        raise UserError(f"{where}: tunelab does not know where a bottleneck adapter goes in {kind} (it looks for "
                        f"{', '.join(p for place in BOTTLENECK_PLACES for p in place)}); use lora")


def _trained_names(model: nn.Module, method: str, trainable_layers: int) -> list[str]:
    names = [name for name, _ in model.named_parameters()]
    if method == "bitfit":
        chosen = [n for n in names if n.endswith("bias")]
    elif method == "embedding":
        embedding = model.get_input_embeddings().weight
        chosen = [n for n, p in model.named_parameters() if p is embedding]
    elif method == "last_layers":
        top = blocks(model)[-trainable_layers:]
        chosen = [n for n in names if _within(n.rsplit(".", 1)[0], top)]
    else:  # bottleneck: its adapters and the norms
        norms = _norms(model)
        chosen = [n for n in names if ".bottleneck." in n or _within(n.rsplit(".", 1)[0], norms)]
    return chosen + [n for n in names if _within(n, HEADS)]


def apply(model: nn.Module, recipe: Recipe) -> nn.Module:
    """tunelab's own method on the model (unchanged for the others): adapters inserted, all but the method's
    weights frozen."""
    a = recipe.adapter
    if a.method not in OWN:
        return model
    return _apply(model, a.method, {"trainable_layers": a.trainable_layers, "bottleneck_size": a.bottleneck_size})


def _apply(model: nn.Module, method: str, settings: dict) -> nn.Module:
    if method == "bottleneck":
        for name in bottleneck_targets(model):
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent)
            setattr(owner, child, WithBottleneck(getattr(owner, child), settings["bottleneck_size"]))
    chosen = set(_trained_names(model, method, settings["trainable_layers"]))
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    return model


def what_trains(model: nn.Module) -> list[str]:
    """The weights that train, with block numbers as *, for the run's metrics: bitfit on Qwen2 lists the
    q_proj, k_proj and v_proj biases and nothing else (its other layers and its RMS norms have none)."""
    return sorted({re.sub(r"\.\d+\.", ".*.", name) for name, p in model.named_parameters() if p.requires_grad})


def save(model: nn.Module, recipe: Recipe, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    trained = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
    save_file(trained, str(directory / TENSORS_FILE))
    a = recipe.adapter
    settings = {"method": a.method, "trainable_layers": a.trainable_layers, "bottleneck_size": a.bottleneck_size}
    (directory / METHOD_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def saved_in(adapter_dir: Path) -> bool:
    return (adapter_dir / METHOD_FILE).is_file()


def load(base: nn.Module, adapter_dir: Path, merge: bool) -> nn.Module:
    """A saved own-method run on its base model; with `merge`, refused for a bottleneck adapter."""
    settings = json.loads((adapter_dir / METHOD_FILE).read_text(encoding="utf-8"))
    method = settings.pop("method")
    if merge and method not in FOLDED:
        raise UserError(f"{adapter_dir.parent}: a {method} adapter cannot be merged into the weights (a "
                        f"non-linearity sits between its two projections); load the run as it is")
    model = _apply(base, method, settings)
    trained = load_file(str(adapter_dir / TENSORS_FILE))
    try:
        result = model.load_state_dict(trained, strict=False)
    except RuntimeError as e:  # a tensor of another shape: the base is not the one the run trained
        raise UserError(f"{adapter_dir / TENSORS_FILE}: does not fit the base model: {str(e).splitlines()[1:2]}")
    if result.unexpected_keys:
        raise UserError(f"{adapter_dir / TENSORS_FILE}: holds {result.unexpected_keys[0]!r}, which the base model "
                        f"lacks (is model.name_or_path in recipe.yaml the base the run trained?)")
    return model
