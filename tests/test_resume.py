"""--resume: a run killed after a checkpoint continues from it to the same final step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, RECIPES, run_cli

pytestmark = pytest.mark.slow
ARGS = ["train.max_steps=30", "train.save_steps=5", "train.logging_steps=1", "eval.max_samples=4",
        "train.save_total_limit=10"]


def test_interrupted_run_resumes_to_the_same_final_step(tmp_path, capsys):
    out = tmp_path / "run"
    staging = tmp_path / "run.partial"
    cmd = [sys.executable, "-m", "tunelab", "train", str(RECIPES / "sft_lora.yaml"), "--output-dir", str(out), *ARGS]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (staging / "checkpoint-10").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # as a crash or a pre-empted job would
    proc.wait()
    assert not out.exists(), "an interrupted run must not look finished"
    done = sorted(int(p.name.split("-")[1]) for p in staging.glob("checkpoint-*"))
    assert done and max(done) < 30

    # In this process from here: the kill above is the part that needs a child.
    code, _, err = run_cli(capsys, *cmd[3:])
    assert code == 2 and "pass --resume" in err

    code, _, err = run_cli(capsys, *cmd[3:], "--resume")
    assert code == 0, err[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 30
    steps = [json.loads(l)["step"] for l in (out / "train_log.jsonl").read_text().splitlines()]
    # the resumed part logs from the checkpoint on, not from step 1 again
    assert steps.count(1) == 1 and steps[-1] == 30
    assert not staging.exists()


@pytest.mark.unit
def test_resume_skips_a_checkpoint_cut_short_by_a_crash(tmp_path):
    """Killed while saving: checkpoint-10 has no state, checkpoint-15 an empty one; resume from checkpoint-5."""
    from tunelab.rundir import last_checkpoint

    for step, state in ((5, json.dumps({"global_step": 5})), (10, None), (15, "")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
