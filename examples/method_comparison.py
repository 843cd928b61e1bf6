"""The README's method comparison, from the runs examples/method_comparison.sh leaves: one Markdown table per
sweep, and a chart of held-out quality against trainable share (docs/method_comparison.png).

    .venv/bin/python examples/method_comparison.py runs/methods_minilm runs/methods_minilm_tag runs/methods_smollm2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FORGETTING_DATA = "builtin:reports_corpus_eval"
CHART = Path(__file__).resolve().parents[1] / "docs" / "method_comparison.png"


def runs(sweep: Path) -> list[dict]:
    """Each run of the sweep, in the sweep's order, with the figures the table shows."""
    rows = []
    for entry in json.loads((sweep / "compare.json").read_text())["runs"]:
        metrics = json.loads((Path(entry["path"]) / "metrics.json").read_text())
        general = metrics.get("eval_data", {}).get(FORGETTING_DATA, {})
        search = metrics.get("lr_search")
        rows.append({**entry, "search": search, "eval": metrics["eval"],
                     "general_ppl": general.get("model", {}).get("perplexity"),
                     "base_general_ppl": general.get("baseline", {}).get("perplexity")})
    return rows


def _rate(row: dict) -> str:
    if not row["search"]:
        return f"{row['learning_rate']:g}"
    tried = ", ".join(row["search"]["scores"])
    return f"**{row['search']['chosen']:g}** of {tried}"


def table(rows: list[dict], quality: list[tuple[str, str]], costs: bool = True) -> str:
    """costs: tokens/s, peak memory and size on disk, left out for a sweep that shared the CPU with other work."""
    base = next((r["base_general_ppl"] for r in rows if r["base_general_ppl"]), None)
    header = ["method", "lr", "trainable", *(title for _, title in quality)]
    header += ["forgetting (Δ ppl)"] * (base is not None) + ["tokens/s", "peak RSS", "saved"] * costs
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["method"], _rate(r), f"{r['trainable_percent']:.2f}%"]
        cells += [f"{r['eval'][key]:.3f}" if key in r["eval"] else "-" for key, _ in quality]
        if base is not None:
            cells.append(f"{r['general_ppl'] - base:+.3f}" if r["general_ppl"] else "-")
        if costs:
            cells += [f"{r['tokens_per_second']:,.0f}", f"{r['peak_memory_mb']:,.0f} MB", f"{r['saved_mb']:.3g} MB"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(panels: list[tuple[str, list[dict], str]]) -> None:
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, rows, key) in zip(axes.flat, panels):
        for r in rows:
            if key in r["eval"]:
                ax.scatter(r["trainable_percent"], r["eval"][key], s=30)
                ax.annotate(r["method"], (r["trainable_percent"], r["eval"][key]), fontsize=8,
                            xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (% of the model, log scale)")
        ax.set_ylabel(key)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def main(minilm: str, minilm_tag: str, smollm2: str) -> None:
    classify, tag, decoder = runs(Path(minilm)), runs(Path(minilm_tag)), runs(Path(smollm2))
    print(table(classify, [("accuracy", "accuracy"), ("eval_loss", "held-out loss")]) + "\n")
    print(table(tag, [("f1", "entity F1"), ("eval_loss", "held-out loss")], costs=False) + "\n")
    print(table(decoder, [("accuracy", "exact match"), ("rougeL", "ROUGE-L"), ("perplexity", "task ppl")]))
    chart([("MiniLM, intent classification (held-out wordings)", classify, "accuracy"),
           ("MiniLM, address tagging (unseen streets and cities)", tag, "f1"),
           ("SmolLM2-135M-Instruct, JSON extraction EN+ZH", decoder, "accuracy")])
    print(f"\nchart: {CHART}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
