"""tunelab as a user gets it from an index: a wheel built from a clean copy of the source, installed (not
editable) into a fresh virtual environment, used from a directory outside the checkout with an empty cache.

The fresh environment sees the dependencies already in .venv through a .pth file, so the test stays offline
and quick; tunelab itself must come from the wheel, which the test checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with tunelab installed from a wheel; its bin/ directory."""
    root = tmp_path_factory.mktemp("packaging")
    # The clean copy: what git would ship (tracked files and new ones it does not ignore), no build leftovers.
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO).stdout.split("\0")
    source = root / "source"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist", source],
         root)
    wheel = next((root / "dist").glob("tunelab-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], root)
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     root).stdout.strip())
    (site / "dependencies_from_dot_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel], root)
    return venv / "bin"


def test_the_installed_wheel_lists_copies_validates_and_trains_by_name(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "TUNELAB_CACHE": str(tmp_path / "empty-cache"), "PATH": f"{installed}:{os.environ['PATH']}",
           "PYTHONPATH": ""}
    python, tunelab = installed / "python", installed / "tunelab"

    where = _run([python, "-c", "import tunelab, tunelab.checkpoints as c; print(tunelab.__file__); "
                                "print(c.EMBEDDED_RECIPES[c.EMBEDDED_QWEN2])"], elsewhere, env).stdout.split()
    assert all(Path(p).is_relative_to(installed.parent) for p in where), where  # the wheel's code and recipes

    listing = _run([tunelab, "recipes"], elsewhere, env).stdout
    assert any(line.split()[:1] == ["qwen2/sft_lora"] for line in listing.splitlines()), listing
    assert "t5/summarize_lora" in listing and "accelerate/cpu_2proc" in listing

    _run([tunelab, "recipes", "copy", "qwen2/sft_lora", "my.yaml"], elsewhere, env)
    shipped = installed.parent.glob("lib/python*/site-packages/tunelab/recipes/qwen2/sft_lora.yaml")
    assert (elsewhere / "my.yaml").read_bytes() == next(shipped).read_bytes()
    refused = subprocess.run([tunelab, "recipes", "copy", "qwen2/sft_lora", "my.yaml"], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert "ok: my.yaml" in _run([tunelab, "validate", "my.yaml"], elsewhere, env).stdout

    # The embedded default is built from the packaged pretrain recipe into the empty cache (few steps here).
    _run([python, "-c", "from tunelab import checkpoints; checkpoints.build_embedded(['train.max_steps=5', "
                        "'train.save_strategy=no'])"], elsewhere, env)
    _run([tunelab, "train", "qwen2/sft_lora", "train.max_steps=2", "eval.max_samples=4", "--output-dir", "run"],
         elsewhere, env)
    assert (elsewhere / "run" / "metrics.json").is_file() and (elsewhere / "run" / "adapter").is_dir()
    assert list((tmp_path / "empty-cache").glob("tiny-qwen2-*/model/config.json"))
