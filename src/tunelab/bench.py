"""`tunelab bench RECIPE`: train a causal_lm.sft recipe briefly under several variants and compare their speed.

Each variant is the recipe with a few overrides (a batch layout, a method, a CUDA setting), or a plain TRL
SFTTrainer with its own defaults on the same model and data, so every table shows our speed as a ratio
to the stack's default. Every variant trains in its own process (bench_processes.py), and the processes take
turns: each trains one segment of steps, then waits while the others train theirs. Interleaving this way
spreads the machine's slow and fast moments (other jobs, thermal throttling) over all variants alike,
where one variant after another would hand a whole slow minute to one of them.

The TRL-default row takes the recipe's model, adapter and data sections (and overrides of them), never its
train: section. All the processes live until the end, so all the variants' models are in memory at once:
for a large model, name fewer --variants.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import peft
import torch
import transformers
import trl

from tunelab import adapters, bench_processes, rundir
from tunelab.config import load_recipe
from tunelab.data.loading import load_splits
from tunelab.errors import UserError
from tunelab.recipes import causal_lm

ROUNDS = 4  # segments per variant: enough to interleave, few enough that a segment is several steps
NOISY = 1.5  # a mean step this much above the median step says other work slowed some steps down
TRL_DEFAULT = "trl-default"
PEAK_MEMORY_NOTE = ("CPU: the peak resident set (ru_maxrss) of the variant's own process over its whole life, "
                    "model loading and the Python runtime included; CUDA: torch.cuda.max_memory_allocated and "
                    "max_memory_reserved during training, in the variant's own process")


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: tuple[str, ...] = ()
    cuda_only: bool = False
    unavailable: str | None = None  # why it cannot run with what is installed


VARIANTS = (
    Variant(TRL_DEFAULT, "plain TRL SFTTrainer defaults"),
    Variant("pad-longest", "layout: random order, pad to longest", ("train.train_sampling_strategy=random",)),
    Variant("grouped", "layout: grouped by length, padded", ("train.train_sampling_strategy=group_by_length",)),
    Variant("packed", "layout: packed, padding-free", ("train.packing=true", "train.padding_free=true")),
    *(Variant(method, f"method: {method}", (f"adapter.method={method}",))
      for method in ("full", "lora", "qlora", "prefix", "prompt")),
    Variant("bf16", "bf16 mixed precision", ("train.bf16=true",), cuda_only=True),
    Variant("sdpa", "attention: sdpa", ("model.attn_implementation=sdpa",), cuda_only=True),
    Variant("eager", "attention: eager", ("model.attn_implementation=eager",), cuda_only=True),
    Variant("grad-ckpt", "gradient checkpointing", ("train.activation_checkpointing=true",), cuda_only=True),
    Variant("liger", "TRL use_liger_kernel", ("train.use_liger_kernel=true",), cuda_only=True,
            unavailable=None if importlib.util.find_spec("liger_kernel") else "liger-kernel is not installed"),
    # Listed, though it never runs, so that a bench says why there is nothing to switch on.
    Variant("chunked-loss", "TRL chunked loss", cuda_only=True,
            unavailable=f"TRL {trl.__version__} already computes every row's loss in chunks (SFTTrainer's fused "
                        f"LM head); its loss_type=chunked_nll is a deprecated alias of the default"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def select(names: str | None, baseline: str, cuda: bool) -> tuple[list[Variant], dict[str, str]]:
    """(the variants to run, the baseline first; {name: why skipped}) for the --variants text."""
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else [v.name for v in VARIANTS]
    for name in [baseline, *wanted]:
        if name not in BY_NAME:
            raise UserError(f"unknown bench variant {name!r}; choose from: {', '.join(BY_NAME)}")
    run, skipped = [], {}
    for name in dict.fromkeys([baseline, *wanted]):
        variant = BY_NAME[name]
        reason = variant.unavailable or ("needs CUDA" if variant.cuda_only and not cuda else None)
        if reason and name == baseline:
            raise UserError(f"bench baseline {name!r} cannot run here: {reason}")
        if reason:
            skipped[name] = reason
        else:
            run.append(variant)
    return run, skipped


def check_recipe(args, variants: list[Variant], scratch: str) -> None:
    """Catch recipe, override and data mistakes here, as one UserError, before any process starts."""
    base = load_recipe(args.recipe, args.overrides)
    if base.recipe != "causal_lm.sft":
        raise UserError(f"{args.recipe}: bench supports causal_lm sft recipes (this one is {base.recipe})")
    load_splits(base, causal_lm.FORMATS["sft"])
    for variant in variants:
        recipe = load_recipe(args.recipe, [*args.overrides, *variant.overrides])
        adapters.check_method(recipe)
        causal_lm.build_args(recipe, "sft", Path(scratch))


def run_bench(args) -> int:
    cuda = torch.cuda.is_available()
    variants, skipped = select(args.variants, args.baseline, cuda)
    segment = math.ceil(args.steps / ROUNDS)
    max_steps = 1 + args.steps  # one warm-up step, left out of the timing
    pause_after = list(range(1 + segment, max_steps, segment))
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as scratch:
        check_recipe(args, variants, scratch)
        print(f"tunelab bench: {len(variants)} variants x {args.steps} steps (+1 warm-up), taking turns in "
              f"segments of {segment} steps", file=sys.stderr, flush=True)
        jobs = {v.name: ([*args.overrides, *v.overrides], v.name == TRL_DEFAULT) for v in variants}
        results, failed = bench_processes.run_interleaved(args.recipe, jobs, max_steps, pause_after, scratch)
    rows = _rows(variants, results, args.baseline)
    report = {"recipe": args.recipe, "overrides": args.overrides, "steps": args.steps, "segment_steps": segment,
              "baseline": args.baseline, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "trl": trl.__version__, "peft": peft.__version__},
              "peak_memory": PEAK_MEMORY_NOTE, "rows": rows, "skipped": skipped, "failed": failed}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "bench.json", report)
    _plot(rows, args.baseline, out / "bench.png")
    print(_table(rows, args.baseline, cuda))
    if TRL_DEFAULT in results:
        settings = ", ".join(f"{k}={v}" for k, v in results[TRL_DEFAULT]["settings"].items())
        print(f"{TRL_DEFAULT} trained with SFTConfig's own defaults: {settings}")
    noisy = [r["variant"] for r in rows if r["step_time_ms_mean"] > NOISY * r["step_time_ms"]]
    if noisy:
        print(f"noisy: {', '.join(noisy)} (mean step over {NOISY}x the median: something else used the machine; "
              f"bench.json has every step's time)")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for name, error in failed.items():
        print(f"failed {name}: {error}")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 1 if failed else 0


def _rows(variants: list[Variant], results: dict, baseline: str) -> list[dict]:
    rows = [{"variant": v.name, "description": v.description, "overrides": list(v.overrides), **results[v.name]}
            for v in variants if v.name in results]
    for row in rows:
        row["peak_memory_mb"] = row.get("peak_cuda_allocated_mb", row["peak_rss_mb"])
    base = next((row for row in rows if row["variant"] == baseline), None)
    for row in rows:
        for key in ("tokens_per_second", "step_time_ms", "peak_memory_mb"):
            row[f"{key}_ratio"] = row[key] / base[key] if base else None
    return rows


def _table(rows: list[dict], baseline: str, cuda: bool) -> str:
    memory = ("peak alloc MB", "reserved MB") if cuda else ("peak RSS MB",)
    header = ("variant", "description", "attention", "tokens/s", "padding", "ms/step", *memory, "final loss",
              f"x {baseline}")
    lines = []
    for r in rows:
        ratio = "n/a" if r["tokens_per_second_ratio"] is None else f"{r['tokens_per_second_ratio']:.2f}"
        memory_cells = ((f"{r['peak_cuda_allocated_mb']:.0f}", f"{r['peak_cuda_reserved_mb']:.0f}") if cuda
                        else (f"{r['peak_rss_mb']:.0f}",))
        lines.append((r["variant"], r["description"], r["attention"], f"{r['tokens_per_second']:.0f}",
                      f"{100 * r['padding_fraction']:.1f}%", f"{r['step_time_ms']:.0f}", *memory_cells,
                      f"{r['final_loss']:.3f}", ratio))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text_columns = 3  # left-aligned; the figures are right-aligned

    def render(cells) -> str:
        return "  ".join(str(c).ljust(w) if i < text_columns else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(render(header))
    memory_note = ("peak alloc/reserved MB: CUDA's peaks during training" if cuda else
                   "peak RSS MB: the variant's own process over its life, the Python runtime included")
    notes = [f"tokens/s: a step's non-padding tokens per second, ms/step: its time, each the median over the "
             f"steps after warm-up; x {baseline}: tokens/s ratio",
             f"padding: padded share of batch positions; {memory_note}; final loss: mean over the last segment"]
    return "\n".join([render(header), rule, *map(render, lines), rule, *notes])


def _plot(rows: list[dict], baseline: str, png: Path) -> None:
    """A bar per variant: non-padding tokens per second, the baseline's bar in grey, ratios written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = [r["variant"] for r in rows][::-1]
    speeds = [r["tokens_per_second"] for r in rows][::-1]
    bars = ax.barh(names, speeds, color=["grey" if n == baseline else "tab:blue" for n in names])
    ratios = [r["tokens_per_second_ratio"] for r in rows][::-1]
    ax.bar_label(bars, labels=["" if q is None else f"x{q:.2f}" for q in ratios], padding=3, fontsize=8)
    ax.set_xlabel(f"non-padding tokens per second, median step (ratio to {baseline})")
    ax.margins(x=0.15)
    fig.tight_layout()
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)  # a reader never sees half a picture
