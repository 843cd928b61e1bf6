"""`tunelab compare RUN_DIR ...`: finished runs side by side, read from their recipe.yaml and metrics.json.

One table (method, learning rate, trainable parameters and their share, train time, non-padding tokens/s,
peak memory, size of the saved weights, then every task metric any run has: "-" where a run lacks it), a PNG bar chart of the task
metrics all runs share plus throughput, memory and trainable share, and compare.json beside the chart.
Runs of different recipe families compare as far as their metrics overlap.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tunelab import checkpoints, rundir
from tunelab.errors import UserError

SHARED_COSTS = [("tokens_per_second", "non-padding tokens/s"), ("peak_memory_mb", "peak memory (MB)"),
                ("trainable_percent", "trainable parameters (%)"), ("saved_mb", "saved weights (MB)")]


def compare_runs(run_dirs: list[Path], chart: Path) -> list[dict]:
    """Read the runs, write the chart and its figures (chart.json beside it), and return the runs' figures."""
    runs = [read_run(Path(d)) for d in run_dirs]
    _name_uniquely(runs)
    write_chart(runs, chart)
    rundir.write_json(chart.with_suffix(".json"), {"runs": runs})
    return runs


def read_run(run_dir: Path) -> dict:
    """The figures compare shows for one finished run."""
    if not checkpoints.is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a finished run directory (no recipe.yaml with adapter/ or model/)")
    metrics = rundir.read_metrics(run_dir)
    if not metrics:
        raise UserError(f"{run_dir}: no metrics.json (was the run copied without it?)")
    recipe = checkpoints.run_recipe(run_dir)
    train = metrics.get("train", {})
    trainable, total = metrics.get("trainable_params"), metrics.get("total_params")
    # A GPU run's own allocations say more than the process's RSS, which the CUDA libraries inflate.
    cuda = metrics.get("peak_cuda_allocated_mb")
    return {
        "run": run_dir.name,
        "path": str(run_dir),
        "recipe": recipe.recipe,
        # A `tunelab quantize` or `prune` run is its source's method, compressed: "full, int8".
        "method": ", ".join([recipe.adapter.method, *([metrics["compression"]["label"]] if "compression" in metrics
                                                      else [])]),
        "learning_rate": float_or_none(recipe.train.get("learning_rate")),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total if trainable and total else None,
        "train_time_s": train.get("runtime_s"),
        "tokens_per_second": train.get("tokens_per_second"),
        "peak_memory_mb": cuda if cuda is not None else metrics.get("peak_rss_mb"),
        "memory_kind": "CUDA" if cuda is not None else "RSS",
        "saved_mb": metrics.get("saved_weights_mb"),  # the adapter's size on disk (the whole model's for full)
        # Only top-level floats are scores: counts (n), settings and sample lists sit beside them.
        "metrics": {k: v for k, v in metrics.get("eval", {}).items() if isinstance(v, float) and math.isfinite(v)},
    }


def float_or_none(value) -> float | None:
    """YAML reads 1e-2 (no dot) as text; the trainer converts it, and so does compare."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _name_uniquely(runs: list[dict]) -> None:
    """Sweeps name their runs by method, so two sweeps' `lora` runs are told apart by their parent folder."""
    names = [r["run"] for r in runs]
    for r in runs:
        if names.count(r["run"]) > 1:
            r["run"] = "/".join(Path(r["path"]).parts[-2:])


def metric_names(runs: list[dict], shared: bool) -> list[str]:
    """Task metrics in first-seen order: those any run has, or (shared) those every run has."""
    names = list(dict.fromkeys(k for r in runs for k in r["metrics"]))
    return [k for k in names if all(k in r["metrics"] for r in runs)] if shared else names


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(runs: list[dict]) -> str:
    """A Markdown table, readable in a terminal and pasteable into a README."""
    metrics = metric_names(runs, shared=False)
    header = ["run", "method", "lr", "trainable", "share", "train time", "tokens/s", "peak memory", "saved", *metrics]
    rows = [[r["run"], r["method"], _number(r["learning_rate"], "g"), _number(r["trainable_params"], ","),
             _number(r["trainable_percent"], ".2f") + "%" * (r["trainable_percent"] is not None),
             _number(r["train_time_s"], ".1f") + " s" * (r["train_time_s"] is not None),
             _number(r["tokens_per_second"], ",.0f"),
             f"{r['peak_memory_mb']:,.0f} MB {r['memory_kind']}" if r["peak_memory_mb"] is not None else "-",
             _number(r["saved_mb"], ".3g") + " MB" * (r["saved_mb"] is not None),
             *[_number(r["metrics"].get(k), ".4g") for k in metrics]] for r in runs]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    text_columns = 2  # run and method read left-aligned, figures right-aligned
    lines = ["| " + " | ".join(cell.ljust(w) if i < text_columns else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))) + " |" for line in [header, *rows]]
    rule = "|" + "|".join("-" * (w + 1) + (":" if i >= text_columns else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])


def write_chart(runs: list[dict], path: Path) -> None:
    """One bar subplot per task metric every run has, then the costs; written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, [r["metrics"][k] for r in runs]) for k in metric_names(runs, shared=True)]
    panels += [(title, [r[key] for r in runs]) for key, title in SHARED_COSTS if all(r[key] is not None for r in runs)]
    columns = max(1, min(4, len(panels)))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    crowded = len(runs) > 3
    for ax, (title, values) in zip(axes.flat, panels):
        bars = ax.bar(range(len(runs)), values, color=[f"C{i % 10}" for i in range(len(runs))])
        ax.bar_label(bars, [f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in values], fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(runs)), [r["run"] for r in runs], fontsize=8, rotation=30 if crowded else 0,
                      ha="right" if crowded else "center")
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
