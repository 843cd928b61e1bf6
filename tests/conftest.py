"""Shared fixtures. The embedded default is built once per session, into a private cache, with far
fewer pretraining steps than the real one: the same build path (subprocess, lock, cache), tiny cost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "qwen2"
# Enough steps for the loss to fall, few enough for seconds on a CPU.
QUICK_PRETRAIN = ["train.max_steps=60", "train.save_strategy=no"]
QUICK_T5_PRETRAIN = ["train.max_steps=40", "train.save_strategy=no"]
QUICK_CLIP_PRETRAIN = ["train.max_steps=40", "train.save_strategy=no"]


@pytest.fixture(scope="session", autouse=True)
def embedded_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("tunelab-cache")
    os.environ["TUNELAB_CACHE"] = str(cache)
    from tunelab import checkpoints

    checkpoints.build_embedded(QUICK_PRETRAIN)
    return cache


def tunelab(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process (exit codes and stderr as a user sees them)."""
    result = subprocess.run([sys.executable, "-m", "tunelab", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"tunelab {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def t5_default():
    """The embedded T5 built the real way (child process, cache, lock), with few pretraining steps."""
    from tunelab import checkpoints

    return checkpoints.build_embedded(QUICK_T5_PRETRAIN, name=checkpoints.EMBEDDED_T5).parent


@pytest.fixture(scope="session")
def clip_default():
    """The embedded CLIP built the real way (child process, cache, lock), with few training steps."""
    from tunelab import checkpoints

    return checkpoints.build_embedded(QUICK_CLIP_PRETRAIN, name=checkpoints.EMBEDDED_CLIP).parent


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    from tunelab.cli import main

    code = main(list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(capsys, pattern: str, *args):
    """Exit code 2 and exactly one error line, which matches `pattern`."""
    code, _, err = run_cli(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.startswith("tunelab: error:")]
    assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), err


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory) -> Path:
    """A short LoRA SFT run shared by the eval, generate and merge tests."""
    out = tmp_path_factory.mktemp("runs") / "sft_lora"
    from tunelab.cli import main

    assert main(["train", str(RECIPES / "sft_lora.yaml"), "--output-dir", str(out), "train.max_steps=12",
                 "eval.max_samples=8", "train.logging_steps=2"]) == 0
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, dequantized from its GGUF file into the session's cache (once)."""
    from tunelab import checkpoints

    return Path(checkpoints.resolve(checkpoints.EMBEDDED_SMOLLM2))
