"""`make demo`: the offline Qwen2 pipeline on the embedded default, ending with a table of gains.

pretrain (the embedded default, built once and cached) -> SFT with LoRA -> DPO with LoRA on the SFT
model; each stage is an ordinary `tunelab train` / `tunelab eval`, and the table is read back from the
metrics.json files those runs wrote.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelab import checkpoints, rundir
from tunelab.cli import main as tunelab

SFT_EVAL = "builtin:sft_eval"


def run(*argv: str) -> None:
    print(f"\n$ tunelab {' '.join(argv)}", flush=True)
    code = tunelab(list(argv))
    if code != 0:
        raise SystemExit(code)


def run_demo(out: Path) -> None:
    started = time.time()
    sft, dpo = out / "sft_lora", out / "dpo_lora"

    print(f"embedded default: {checkpoints.embedded_run_dir()} (built now if missing)", flush=True)
    checkpoints.build_embedded()
    run("train", "qwen2/sft_lora", "--output-dir", str(sft), "--overwrite")
    run("eval", str(sft), "--baseline")
    run("train", "qwen2/dpo_lora", f"model.name_or_path={sft}", "--output-dir", str(dpo), "--overwrite")
    run("eval", str(dpo), "--data", SFT_EVAL, "--format", "messages")

    pretrain = rundir.read_metrics(checkpoints.embedded_run_dir())
    sft_m, dpo_m = rundir.read_metrics(sft), rundir.read_metrics(dpo)
    rows = [
        ("base (pretrained)", sft_m["baseline"], None),
        ("SFT (LoRA)", sft_m["eval"], None),
        ("DPO (LoRA on SFT)", dpo_m["eval_data"][SFT_EVAL]["model"], dpo_m["eval"]),
    ]
    print(f"\nPretraining: corpus perplexity {pretrain['eval']['perplexity']:.3f} on held-out text, "
          f"{pretrain['total_params']:,} parameters, {pretrain['train']['steps']} steps")
    print(f"\nHeld-out questions ({SFT_EVAL}, facts no SFT or DPO example asked about):\n")
    header = f"{'model':<20}{'perplexity':>12}{'accuracy':>10}{'ROUGE-L':>9}{'DPO reward acc':>16}{'DPO margin':>12}"
    print(header + "\n" + "-" * len(header))
    for name, m, dpo_eval in rows:
        reward_acc = f"{dpo_eval['rewards/accuracies']:.3f}" if dpo_eval else "-"
        margin = f"{dpo_eval['rewards/margins']:.3f}" if dpo_eval else "-"
        print(f"{name:<20}{m['perplexity']:>12.3f}{m['accuracy']:>10.3f}{m['rougeL']:>9.3f}{reward_acc:>16}{margin:>12}")
    print(f"\nperplexity: over the assistant replies (and their end token); accuracy: exact match of the greedy "
          f"reply;\nROUGE-L: of the greedy reply against the reference. DPO reward accuracy / margin: on held-out "
          f"preference pairs\n(chosen = right sum, rejected = off by one).\nRuns: {sft}, {dpo}.  "
          f"Demo time {time.time() - started:.0f} s.")
