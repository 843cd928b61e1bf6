"""`accelerate launch` with two DDP ranks on the CPU (gloo), against one process with the doubled batch.

Both ranks train and only rank 0 writes; the two-rank loss curve is the one-rank curve; the adapter the
distributed run saves is complete and computes what the one-rank run's adapter computes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, RECIPES, tunelab

pytestmark = pytest.mark.slow

PER_RANK_BATCH = 4
# Sequential order: rank r takes batches r, r + 2, ... of size PER_RANK_BATCH, so each optimizer step sees the
# records one process with the doubled batch sees (the default length-grouped sampler orders them by world size).
# No dropout, so the two runs draw no random numbers that could differ; no warm-up, so every step moves weights.
SAME_TRAINING = ["train.max_steps=4", "train.logging_steps=1", "train.warmup_steps=0", "train.save_strategy=no",
                 "train.train_sampling_strategy=sequential", "adapter.dropout=0", "eval.max_samples=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """(run directory, launch result) of a two-rank run of batch PER_RANK_BATCH per rank."""
    parent = tmp_path_factory.mktemp("ddp")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "tunelab", "train", str(RECIPES / "sft_lora.yaml"), "--output-dir", str(parent / "run"),
           *SAME_TRAINING, f"train.per_device_train_batch_size={PER_RANK_BATCH}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return parent / "run", result


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The same training in one process, with the batch of both ranks together."""
    out = tmp_path_factory.mktemp("single") / "run"
    tunelab("train", str(RECIPES / "sft_lora.yaml"), "--output-dir", str(out), *SAME_TRAINING,
            f"train.per_device_train_batch_size={2 * PER_RANK_BATCH}", env={"OMP_NUM_THREADS": "1"})
    return out


def logged(run: Path, key: str) -> list[float]:
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [e[key] for e in log if key in e]


def test_two_cpu_ranks_train_and_rank_zero_writes_the_run(ddp_run):
    out, result = ddp_run
    assert "rank 0/2 trained 4 steps" in result.stderr and "rank 1/2 trained 4 steps" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # one run directory, no stray .partial
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train"]["steps"] == 4
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]  # logged once per step, not once per rank
    assert result.stdout.count("run: ") == 1  # the summary comes from rank 0 only


def test_two_ranks_follow_the_loss_curve_of_one_rank_with_the_doubled_batch(ddp_run, single_run):
    """SFT's loss is a mean over the loss-bearing tokens of the whole batch. With average_tokens_across_devices
    (the Trainer's default) each rank divides its token-loss sum by the token count of both ranks' batches and
    multiplies by the world size; DDP then averages the gradients over the ranks, which gives the gradient of
    (sum over both batches) / (tokens in both batches): the one-rank gradient. The logged loss is the mean of
    the ranks' losses, the same quantity. What remains is floating-point order (sums split over two processes,
    batches padded to their own longest record): the curves agreed to 3e-7 relative in a trial, so 1e-5 is
    asserted. Without average_tokens_across_devices each rank would average over its own tokens, and in the
    same trial the third step's loss differed by 5e-4 relative (steps 1 and 2 happen to have equal token
    counts on both ranks); one step of training moves the loss by far more than either (checked below)."""
    ddp_losses, single_losses = logged(ddp_run[0], "loss"), logged(single_run, "loss")
    assert len(ddp_losses) == len(single_losses) == 4
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)
    assert logged(ddp_run[0], "grad_norm") == pytest.approx(logged(single_run, "grad_norm"), rel=1e-4)
    assert min(abs(a - b) for a, b in zip(single_losses, single_losses[1:])) > 1e-3 * single_losses[0]


def test_the_distributed_run_saves_one_complete_adapter_equal_to_the_trained_model(ddp_run, single_run):
    """The adapter rank 0 wrote has every tensor the one-rank run's adapter has, with the same values, and
    PeftModel.from_pretrained (through tunelab's loader) gives the same logits as that run's model. A missing
    or untrained tensor (a save before the last step, a write race between ranks) would change the logits: the
    base model's differ from the trained one's by far more than the tolerance."""
    from tunelab.families import causal_lm

    ddp_weights = load_file(ddp_run[0] / "adapter" / "adapter_model.safetensors")
    single_weights = load_file(single_run / "adapter" / "adapter_model.safetensors")
    assert sorted(ddp_weights) == sorted(single_weights) and ddp_weights
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-3, atol=1e-5)

    (ddp_model, tokenizer), (single_model, _) = causal_lm.load_run(ddp_run[0]), causal_lm.load_run(single_run)
    base, _ = causal_lm.base_model_of(single_run)
    inputs = tokenizer(["What is 3 plus 4?", "What is 2 plus 5?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ddp_logits, single_logits, base_logits = (m.eval()(**inputs).logits for m in (ddp_model, single_model, base))
    torch.testing.assert_close(ddp_logits, single_logits, rtol=1e-3, atol=1e-4)
    assert (single_logits - base_logits).abs().max() > 100 * 1e-4
