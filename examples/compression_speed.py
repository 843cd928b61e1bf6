"""Generation speed of every run examples/compression.sh made, measured again in one process, one model after
another, so that all of them see the same machine; writes DIR/speed.json, which examples/compression.py then
prints instead of the figures each `tunelab quantize` / `prune` measured while it ran (those move with whatever
else the CPU is doing).

    flock /tmp/tunelab-bench.lock .venv/bin/python examples/compression_speed.py runs/compression/smollm2 [--repeats 3]

The measurement is tunelab's own (compression.runs.generation_speed: greedy, batch 1, 32 tokens forced per
prompt, the first 4 eval prompts, after a warm-up); each model is timed `--repeats` times and the median kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from tunelab import checkpoints
from tunelab.compression import runs
from tunelab.families import causal_lm


def source_of(root: Path) -> Path:
    made = [runs.read(p) for p in sorted(root.glob("quantize-*")) + sorted(root.glob("prune-*"))]
    sources = {m["source"] for m in made if m}
    if len(sources) != 1:
        raise SystemExit(f"{root}: expected one source run behind its quantize-*/prune-* runs, found {sorted(sources)}")
    return Path(sources.pop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="one model's folder of runs/compression (tiny or smollm2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # int8 logs a cast warning at every matmul
    source = source_of(args.root)
    named = {"source": source, **{p.name: p for p in sorted(args.root.glob("quantize-*")) + sorted(
        args.root.glob("prune-*")) if (p / "metrics.json").is_file()}}
    speeds = {}
    for name, run in named.items():
        model, tokenizer = causal_lm.load_run(run, merge=name == "source")
        rows = runs.eval_rows(runs.Source(run, checkpoints.run_recipe(run), "sft", model, tokenizer), None)
        figures = [runs.generation_speed(model.eval(), tokenizer, rows) for _ in range(args.repeats)]
        speeds[name] = statistics.median(figures)
        print(f"{name:28s} {speeds[name]:8.1f} tokens/s  ({', '.join(map(str, figures))})", flush=True)
        del model
    (args.root / "speed.json").write_text(json.dumps(speeds, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
