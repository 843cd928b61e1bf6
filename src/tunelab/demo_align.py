"""`make demo-align`: alignment beyond DPO on the embedded default, offline, in one table.

SFT (LoRA), then DPO on preference pairs; and from a shorter SFT run (100 steps), GRPO with a verifiable reward (the
exact reply, no reward model) and RLHF as InstructGPT does it: a reward model trained on the preference pairs, then
RLOO against it. Each stage is an ordinary `tunelab train` / `tunelab eval`
of the shipped recipes/qwen2 recipes; every model is scored on the same held-out questions, facts no train record
asks about.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelab import rundir
from tunelab.demo import run

HELD_OUT = "builtin:sft_eval"  # the questions with their reference replies
EARLY_STEPS = 100  # of the SFT recipe's 200


def run_demo_align(out: Path) -> None:
    started, took = time.time(), {}
    runs = {name: out / name for name in ("sft", "dpo", "sft_early", "grpo", "reward", "rloo")}

    def stage(name: str, recipe: str, *overrides: str) -> None:
        begun = time.time()
        run("train", recipe, *overrides, "--output-dir", str(runs[name]), "--overwrite")
        took[name] = time.time() - begun

    stage("sft", "qwen2/sft_lora")
    stage("dpo", "qwen2/dpo_lora", f"model.name_or_path={runs['sft']}")
    # The whole SFT run answers every train question right: its replies all earn the same reward, so RL has no
    # signal left. GRPO and RLOO start from a shorter SFT run, which still copies operands wrong.
    stage("sft_early", "qwen2/sft_lora", f"train.max_steps={EARLY_STEPS}")
    early = f"model.name_or_path={runs['sft_early']}"
    stage("grpo", "qwen2/grpo_lora", early)
    stage("reward", "qwen2/reward_lora", f"model.name_or_path={runs['sft']}")
    stage("rloo", "qwen2/rloo_lora", early, f"rewards=[{runs['reward']}]")
    baseline = ["--baseline"]
    for name in ("sft", "dpo", "sft_early", "grpo", "rloo"):
        run("eval", str(runs[name]), "--data", HELD_OUT, "--format", "messages", *baseline)
        baseline = []

    metrics = {name: rundir.read_metrics(path) for name, path in runs.items()}
    rows = [("base (pretrained)", metrics["sft"]["eval_data"][HELD_OUT]["baseline"], None)]
    labels = {"sft": "SFT (LoRA, 200 steps)", "dpo": "DPO on SFT", "sft_early": f"SFT (LoRA, {EARLY_STEPS} steps)",
              "grpo": "GRPO on it, exact reply", "rloo": "RLOO on it, reward model"}
    rows += [(label, metrics[name]["eval_data"][HELD_OUT]["model"], took[name]) for name, label in labels.items()]
    print(f"\nHeld-out questions ({HELD_OUT}: 20 sums no train record asks about):\n")
    header = f"{'model':<28}{'perplexity':>11}{'exact match':>13}{'ROUGE-L':>9}{'train time':>12}"
    print(header + "\n" + "-" * len(header))
    for label, replies, seconds in rows:
        spent = f"{seconds:.0f} s" if seconds is not None else "-"
        print(f"{label:<28}{replies['perplexity']:>11.3f}{replies['accuracy']:>13.3f}{replies['rougeL']:>9.3f}"
              f"{spent:>12}")
    reward = metrics["reward"]["eval"]
    print(f"\nReward model (on SFT, {took['reward']:.0f} s): held-out pairs ranked right {reward['accuracy']:.3f}, "
          f"mean margin {reward['margin']:.3f}.")
    print(f"exact match: the greedy reply equals the reference reply. Runs: {out}.  "
          f"Demo time {time.time() - started:.0f} s.")
