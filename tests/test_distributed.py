"""`accelerate launch` with two DDP ranks on the CPU (gloo): both ranks train, only rank 0 writes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, RECIPES

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_train_and_rank_zero_writes_the_run(tmp_path):
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "tunelab", "train", str(RECIPES / "sft_lora.yaml"), "--output-dir", str(out),
           "train.max_steps=3", "train.logging_steps=1", "eval.max_samples=4", "train.save_strategy=no"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2 trained 3 steps" in result.stderr and "rank 1/2 trained 3 steps" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # one run directory, no stray .partial
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train"]["steps"] == 3
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]  # logged once per step, not once per rank
    assert result.stdout.count("run: ") == 1  # the summary comes from rank 0 only
