"""The README's compression tables and docs/prune_curve.png, from the runs examples/compression.sh writes.

    .venv/bin/python examples/compression.py runs/compression [--chart docs/prune_curve.png]

Reads only metrics.json: a distillation run's own eval and its teacher's (scored on the same records), and a
quantize or prune run's "compression" section (eval, weights on disk and generation speed, before and after).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODELS = {"tiny": "tiny default (0.8M Qwen2)", "smollm2": "SmolLM2-135M-Instruct"}
SCORES = [("perplexity", "perplexity", ".3f"), ("accuracy", "exact match", ".3f"), ("rougeL", "ROUGE-L", ".3f")]


def metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text(encoding="utf-8"))


def row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def scores(figures: dict) -> list[str]:
    return [format(figures[k], f) if k in figures else "-" for k, _, f in SCORES]


def distill_table(root: Path) -> list[str]:
    with_teacher, alone = metrics(root / "distill"), metrics(root / "distill-alone")
    recipe = (root / "distill" / "recipe.yaml").read_text(encoding="utf-8")
    teacher = with_teacher["teacher"]
    lines = [row(["model", "parameters", "held-out perplexity", "train time", "tokens/s"]),
             row(["---"] + ["---:"] * 4)]
    for name, m in (("student alone (alpha 0)", alone), ("student distilled (alpha 0.5, T 2)", with_teacher)):
        t = m["train"]
        lines.append(row([name, f"{m['total_params']:,}", f"{m['eval']['perplexity']:.3f}", f"{t['runtime_s']:.0f} s",
                          f"{t['tokens_per_second']:,.0f}"]))
    lines.append(row([f"teacher ({teacher['name_or_path'].split('@')[0]})", f"{teacher['total_params']:,}",
                      f"{teacher['eval']['perplexity']:.3f}", "-", "-"]))
    steps = with_teacher["train"]["steps"]
    return lines + ["", f"{steps} steps each; recipe: {'student_init: fresh' if 'fresh' in recipe else 'layers copied'}"]


def compressed(root: Path, prefix: str) -> list[tuple[str, dict]]:
    return [(p.name.removeprefix(prefix), metrics(p)["compression"]) for p in sorted(root.glob(prefix + "*"))
            if (p / "metrics.json").is_file()]


def speeds(root: Path) -> dict | None:
    """examples/compression_speed.py's figures (every model timed in one process), when it has been run."""
    path = root / "speed.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def quantize_table(root: Path) -> list[str]:
    runs, timed = compressed(root, "quantize-"), speeds(root)
    source = runs[0][1]["before"]
    lines = [row(["method", "weights on disk", "in memory", "generation tokens/s", *(n for _, n, _ in SCORES)]),
             row(["---"] + ["---:"] * (3 + len(SCORES))),
             row(["float32 (source)", f"{source['weights_mb']:.3g} MB", f"{source['weights_mb']:.3g} MB",
                  f"{timed['source']:g}" if timed else
                  " / ".join(f"{c['before']['generate_tokens_per_second']:g}" for _, c in runs),
                  *scores(source["eval"])])]
    for name, c in runs:
        after = c["after"]
        memory = after.get("weights_in_memory_mb", after["weights_mb"])
        speed = timed[f"quantize-{name}"] if timed else after["generate_tokens_per_second"]
        lines.append(row([name, f"{after['weights_mb']:.3g} MB", f"{memory:.3g} MB", f"{speed:g}",
                          *scores(after["eval"])]))
    when = ("speeds from compression_speed.py (all in one process, median of 3)" if timed else
            "the source's speed was measured before each method (one figure each)")
    return lines + ["", f"eval records: {runs[0][1]['eval_records']}; {when}"]


def prune_table(root: Path) -> list[str]:
    runs, timed = compressed(root, "prune-"), speeds(root)
    runs.sort(key=lambda r: (r[1]["method"], r[1]["settings"]["sparsity"]))
    source = runs[0][1]["before"]
    lines = [row(["pruning", "parameters", "weights on disk", "generation tokens/s", *(n for _, n, _ in SCORES)]),
             row(["---"] + ["---:"] * (3 + len(SCORES))),
             row(["none (source)", f"{source['total_params']:,}", f"{source['weights_mb']:.3g} MB",
                  f"{timed['source'] if timed else source['generate_tokens_per_second']:g}",
                  *scores(source["eval"])])]
    for name, c in runs:
        after = c["after"]
        speed = timed[f"prune-{name}"] if timed else after["generate_tokens_per_second"]
        lines.append(row([c["label"], f"{after['total_params']:,}", f"{after['weights_mb']:.3g} MB", f"{speed:g}",
                          *scores(after["eval"])]))
    return lines


def chart(roots: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(roots), 2, figsize=(9, 3.2 * len(roots)), squeeze=False)
    for (model, root), (ppl_ax, acc_ax) in zip(roots.items(), axes):
        runs = [c for _, c in compressed(root, "prune-")]
        source = runs[0]["before"]["eval"]
        for method, style in (("unstructured", "o-"), ("channels", "s-"), ("heads", "^-")):
            points = sorted((c["settings"]["sparsity"], c["after"]["eval"]) for c in runs if c["method"] == method)
            if not points:
                continue
            xs = [0.0] + [s for s, _ in points]
            for ax, key in ((ppl_ax, "perplexity"), (acc_ax, "accuracy")):
                ax.plot(xs, [source[key]] + [e[key] for _, e in points], style, label=method)
        ppl_ax.set_yscale("log")
        ppl_ax.set_ylabel("held-out perplexity")
        acc_ax.set_ylabel("exact match")
        for ax in (ppl_ax, acc_ax):
            ax.set_title(MODELS[model], fontsize=9)
            ax.set_xlabel("sparsity (share of weights, or of heads / MLP channels per layer)", fontsize=8)
            ax.grid(alpha=0.3)
        acc_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the runs of examples/compression.sh (runs/compression)")
    parser.add_argument("--chart", type=Path, default=Path("docs/prune_curve.png"))
    args = parser.parse_args()
    roots = {m: args.root / m for m in MODELS if (args.root / m).is_dir()}
    for model, root in roots.items():
        for title, table in (("Distillation", distill_table), ("Quantization", quantize_table),
                             ("Pruning", prune_table)):
            print(f"\n**{MODELS[model]}: {title.lower()}**\n")
            print("\n".join(table(root)))
    chart(roots, args.chart)
    print(f"\nchart: {args.chart}")


if __name__ == "__main__":
    main()
