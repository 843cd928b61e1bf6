"""`make demo-real`: the real SmolLM2-135M-Instruct, offline, taught a house style of JSON extraction in
English and Chinese by LoRA SFT, then DPO on top; base vs SFT vs DPO on held-out people, in one table.

Each stage is an ordinary `tunelab train` / `tunelab eval` of the shipped recipes/smollm2 recipes, and the table
is read back from the metrics.json files those runs wrote. The runs' own end-of-training evaluation is cut to
a few records: the table comes from `tunelab eval --data` on each language's held-out set, which scores
every model on the same records.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelab import checkpoints, rundir
from tunelab.config import EMBEDDED_SMOLLM2
from tunelab.demo import run as tunelab_run

HELD_OUT = {"EN": "builtin:extract_en_eval", "ZH": "builtin:extract_zh_eval"}
QUICK_EVAL = "eval.max_samples=8"  # each run's own eval: a check that it works; the table's come after


def run_demo_real(out: Path) -> None:
    started = time.time()
    sft, dpo = out / "sft_lora", out / "dpo_lora"

    print(f"real model: {EMBEDDED_SMOLLM2} -> {checkpoints.resolve(EMBEDDED_SMOLLM2)} (dequantized once)", flush=True)
    tunelab_run("train", "smollm2/sft_lora", QUICK_EVAL, "--output-dir", str(sft), "--overwrite")
    for data in HELD_OUT.values():
        tunelab_run("eval", str(sft), "--baseline", "--data", data, "--format", "messages")
    tunelab_run("train", "smollm2/dpo_lora", f"model.name_or_path={sft}", QUICK_EVAL,
                "--output-dir", str(dpo), "--overwrite")
    for data in HELD_OUT.values():
        tunelab_run("eval", str(dpo), "--data", data, "--format", "messages")

    sft_m, dpo_m = rundir.read_metrics(sft), rundir.read_metrics(dpo)
    rows = [("base (SmolLM2-135M-Instruct)", {lang: sft_m["eval_data"][d]["baseline"] for lang, d in HELD_OUT.items()}),
            ("SFT (LoRA)", {lang: sft_m["eval_data"][d]["model"] for lang, d in HELD_OUT.items()}),
            ("DPO (LoRA on SFT)", {lang: dpo_m["eval_data"][d]["model"] for lang, d in HELD_OUT.items()})]
    print(f"\nHeld-out people (24 English and 24 Chinese sentences about people no train record mentions), "
          f"reply = one line of JSON in the house style:\n")
    header = f"{'model':<30}" + "".join(f"{lang + ' ' + name:>14}" for lang in HELD_OUT
                                       for name in ("exact", "ROUGE-L", "perplexity"))
    print(header + "\n" + "-" * len(header))
    for name, by_lang in rows:
        cells = "".join(f"{m['accuracy']:>14.3f}{m['rougeL']:>14.3f}{m['perplexity']:>14.3f}"
                        for m in by_lang.values())
        print(f"{name:<30}{cells}")
    dpo_eval = dpo_m["eval"]
    print(f"\nexact: the greedy reply equals the reference JSON; ROUGE-L: of the reply against it (Chinese by "
          f"characters);\nperplexity: over the reference reply's tokens and its end of turn. DPO on held-out pairs: "
          f"reward accuracy {dpo_eval['rewards/accuracies']:.3f}, margin {dpo_eval['rewards/margins']:.3f}.\n"
          f"Training: SFT {sft_m['train']['steps']} steps in {sft_m['train']['runtime_s']:.0f} s, DPO "
          f"{dpo_m['train']['steps']} steps in {dpo_m['train']['runtime_s']:.0f} s ({_precision(sft_m)}).\n"
          f"Runs: {sft}, {dpo}.  Demo time {time.time() - started:.0f} s.")


def _precision(metrics: dict) -> str:
    return "bf16 autocast" if metrics.get("precision", {}).get("bf16") else "fp32"
