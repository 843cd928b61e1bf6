"""`tunelab bench RECIPE`: train a causal_lm.sft recipe briefly under several variants and compare their speed,
and the loss each reached.

Each variant is the recipe with a few overrides (a batch layout, a method, a precision, a CUDA setting),
trained as `tunelab train` trains it, or a plain TRL SFTTrainer on the same model, adapter and tokenized
data: `trl-same-hparams` with the recipe's learning rate and schedule, batch, max length and seed, TRL's
defaults for the rest, `trl-default` with TRL's defaults for everything. `tunelab` is the recipe unchanged, and every ratio
is taken against the baseline row (trl-same-hparams unless --baseline says otherwise), so the table shows
what tunelab's choices buy on the same optimisation problem. Every row then scores the same held-out
records (tunelab's perplexity, the training loss tokens), so a speed-up can be read at equal loss.

Every variant trains in its own process (bench_processes.py), and the processes take turns: each trains one
segment of steps, then waits while the others train theirs. Interleaving this way spreads the machine's slow
and fast moments (other jobs, thermal throttling) over all variants alike, where one variant after another
would hand a whole slow minute to one of them. All the processes live until the end, so all the variants'
models are in memory at once: for a large model, name fewer --variants.

Achieved GFLOP/s is the nominal count (bench_processes.flops_per_token) times tokens/s, and its share of
this machine's own matmul speed, measured before the variants start, in the row's precision.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
import transformers
import trl

from tunelab import adapters, bench_processes, precision, rundir, shipped
from tunelab.bench_processes import TRL_DEFAULT, TRL_SAME_HPARAMS, TUNELAB
from tunelab.config import load_recipe
from tunelab.config import split_overrides as split_targeted_overrides
from tunelab.data.loading import load_splits
from tunelab.errors import UserError
from tunelab.families import causal_lm

ROUNDS = 4  # segments per variant: enough to interleave, few enough that a segment is several steps
NOISY = 1.5  # a mean step this much above the median step says other work slowed some steps down
EVAL_GAP = 0.05  # an eval loss this far from the baseline's: its speed was not bought at equal loss
PEAK_SIZE = 2048  # the matmul that measures the machine's peak: (PEAK_SIZE, PEAK_SIZE) @ (PEAK_SIZE, PEAK_SIZE)
PEAK_SECONDS = 2.0  # time the peak matmul at least 3 and at most 10 times, stopping after this long
METHODS = ("full", "lora", "qlora", "prefix", "prompt")
# Benched when named in --variants (each is a process and a run: the default bench stays short).
MORE_METHODS = ("dora", "adalora", "ia3", "ln_tuning", "bitfit", "embedding", "last_layers", "bottleneck",
                "gradual_unfreeze")
PEAK_MEMORY_NOTE = ("CPU: the peak resident set (ru_maxrss) of the variant's own process over its whole life, "
                    "model loading and the Python runtime included; CUDA: torch.cuda.max_memory_allocated and "
                    "max_memory_reserved during training, in the variant's own process")
FLOPS_NOTE = ("nominal (MFU convention): per non-padding token 6N for full fine-tuning, 4N + 2 N_trainable with a "
              "frozen base (N: nn.Linear weights, the LM head and adapters included, the embedding lookup excluded, "
              "4-bit layers at their logical size); attention's sequence-squared term and activation recomputation "
              "left out; peak_share: achieved / this machine's matmul_peak_gflops in the row's precision")


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: tuple[str, ...] = ()
    trainer: str = TUNELAB  # who builds the trainer: bench_processes.TUNELAB, TRL_DEFAULT or TRL_SAME_HPARAMS
    method: str | None = None  # a method row: trains at the learning rate of its sibling recipe sft_<method>.yaml
    needs: str | None = None  # "cuda", or "bf16": CUDA or a CPU with bf16 instructions
    unavailable: str | None = None  # why it cannot run with what is installed
    by_default: bool = True  # run when --variants is not given


VARIANTS = (
    Variant(TRL_SAME_HPARAMS, "TRL SFTTrainer: recipe's lr schedule, batch, length, seed", trainer=TRL_SAME_HPARAMS),
    Variant(TUNELAB, "the recipe as tunelab train runs it"),
    Variant(TRL_DEFAULT, "TRL SFTTrainer: all its defaults", trainer=TRL_DEFAULT),
    Variant("pad-longest", "layout: random order, pad to longest", ("train.train_sampling_strategy=random",)),
    Variant("grouped", "layout: grouped by length, padded", ("train.train_sampling_strategy=group_by_length",)),
    Variant("packed", "layout: packed, padding-free", ("train.packing=true", "train.padding_free=true")),
    *(Variant(method, f"method: {method}", (f"adapter.method={method}",), method=method) for method in METHODS),
    *(Variant(method, f"method: {method}", (f"adapter.method={method}",), method=method, by_default=False)
      for method in MORE_METHODS),
    Variant("fp32", "precision: fp32", ("train.bf16=false",)),
    Variant("bf16", "precision: bf16 autocast", ("train.bf16=true",), needs="bf16"),
    Variant("sdpa", "attention: sdpa", ("model.attn_implementation=sdpa",), needs="cuda"),
    Variant("eager", "attention: eager", ("model.attn_implementation=eager",), needs="cuda"),
    Variant("grad-ckpt", "gradient checkpointing", ("train.activation_checkpointing=true",), needs="cuda"),
    Variant("liger", "TRL use_liger_kernel", ("train.use_liger_kernel=true",), needs="cuda",
            unavailable=None if importlib.util.find_spec("liger_kernel") else "liger-kernel is not installed"),
    # Listed, though it never runs, so that a bench says why there is nothing to switch on.
    Variant("chunked-loss", "TRL chunked loss", needs="cuda",
            unavailable=f"TRL {trl.__version__} already computes every row's loss in chunks (SFTTrainer's fused "
                        f"LM head); its loss_type=chunked_nll is a deprecated alias of the default"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def _why_not(variant: Variant, cuda: bool) -> str | None:
    """Why the variant cannot run on this machine, or None."""
    if variant.unavailable:
        return variant.unavailable
    if variant.needs == "cuda" and not cuda:
        return "needs CUDA"
    if variant.needs == "bf16" and not cuda and precision.cpu_bf16_instructions() is None:
        return f"needs CUDA or a CPU with bf16 instructions ({' or '.join(precision.CPU_BF16_FLAGS)})"
    return None


def select(names: str | None, baseline: str, cuda: bool) -> tuple[list[Variant], dict[str, str]]:
    """(the variants to run, the baseline first; {name: why skipped}) for the --variants text."""
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else [v.name for v in VARIANTS if v.by_default]
    for name in [baseline, *wanted]:
        if name not in BY_NAME:
            raise UserError(f"unknown bench variant {name!r}; choose from: {', '.join(BY_NAME)}")
    run, skipped = [], {}
    for name in dict.fromkeys([baseline, *wanted]):
        variant = BY_NAME[name]
        reason = _why_not(variant, cuda)
        if reason and name == baseline:
            raise UserError(f"bench baseline {name!r} cannot run here: {reason}")
        if reason:
            skipped[name] = reason
        else:
            run.append(variant)
    return run, skipped


def split_overrides(overrides: list[str], names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Shared `key=value` edits, and `VARIANT:key=value` edits for one of the benched variants each."""
    shared, own = split_targeted_overrides(overrides, names, "benched variants")
    for edit in own.get(TRL_DEFAULT, []):
        if edit.startswith("train."):
            raise UserError(f"{TRL_DEFAULT}:{edit}: {TRL_DEFAULT} trains with SFTConfig's own defaults, never the "
                            f"train: section")
    return shared, own


def _learning_rate_overrides(recipe_path: str, shared: list[str], variant: Variant) -> tuple[list[str], str]:
    """(the edit that gives a method row its own learning rate, or none; where its rate comes from). A method
    trains at the rate of the recipe beside the benched one for that method (sft_full.yaml beside sft_lora.yaml),
    when that recipe fine-tunes the same model; otherwise at the benched recipe's."""
    if variant.trainer == TRL_DEFAULT:
        return [], "SFTConfig's default"
    sibling = Path(recipe_path).with_name(f"sft_{variant.method}.yaml") if variant.method else None
    if sibling is None or not sibling.is_file() or sibling.resolve() == Path(recipe_path).resolve():
        return [], "the recipe"
    benched, other = load_recipe(recipe_path, shared), load_recipe(sibling)
    rate = other.train.get("learning_rate")
    if rate is None or (other.recipe, other.model.name_or_path) != (benched.recipe, benched.model.name_or_path):
        return [], "the recipe"
    return [f"train.learning_rate={rate}"], str(sibling)


def plan(request: BenchRequest, variants: list[Variant]) -> dict[str, tuple[list[str], str]]:
    """{name: (the variant's overrides, where its learning rate comes from)}. Later edits win: the sibling
    recipe's learning rate, the shared overrides, the variant's own, its `VARIANT:key=value` edits."""
    shared, own = split_overrides(request.overrides, [v.name for v in variants])
    jobs = {}
    for v in variants:
        rate, source = _learning_rate_overrides(request.recipe, shared, v)
        edits = [*shared, *v.overrides, *own[v.name]]
        if any(e.startswith("train.learning_rate=") for e in edits) and v.trainer != TRL_DEFAULT:
            source = "an override"
        jobs[v.name] = ([*rate, *edits], source)
    return jobs


def check_recipe(request: BenchRequest, jobs: dict[str, tuple[list[str], str]], scratch: str) -> None:
    """Catch recipe, override and data mistakes here, as one UserError, before any process starts."""
    base = load_recipe(request.recipe, split_overrides(request.overrides, list(jobs))[0])
    if base.recipe != "causal_lm.sft":
        raise UserError(f"{request.recipe}: bench supports causal_lm sft recipes (this one is {base.recipe})")
    load_splits(base, causal_lm.FORMATS["sft"])
    for overrides, _ in jobs.values():
        recipe = load_recipe(request.recipe, overrides)
        adapters.check_method(recipe)
        causal_lm.build_args(recipe, "sft", Path(scratch))


def matmul_peak_gflops(cuda: bool) -> dict[str, float]:
    """This machine's matmul speed in fp32 and bf16, GFLOP/s: the best time of a PEAK_SIZE square matmul on
    torch's own threads (or the GPU). The rows' achieved GFLOP/s are read as shares of it."""
    device = "cuda" if cuda else "cpu"
    flops = 2 * PEAK_SIZE**3
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(PEAK_SIZE, PEAK_SIZE, device=device).to(dtype) for _ in range(2))
        times, began = [], time.perf_counter()
        while len(times) < 3 or (len(times) < 10 and time.perf_counter() - began < PEAK_SECONDS):
            start = time.perf_counter()
            torch.mm(a, b)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks[name] = round(flops / min(times) / 1e9, 1)  # the first run warms up, and is seldom the best
    return peaks


@dataclass
class BenchRequest:
    """What `tunelab bench` was asked for (cli.py has each option's help)."""
    recipe: str  # a recipe file or a shipped recipe's name
    overrides: list[str] = field(default_factory=list)
    variants: str | None = None  # comma-separated; None: the default set for this machine
    steps: int = 20
    baseline: str = "trl-same-hparams"
    eval_samples: int = 32
    output_dir: str = "runs/bench"


def run_bench(request: BenchRequest) -> dict:
    """Train every variant in turns, write bench.json and bench.png, and return the report (summary() words it)."""
    request = dataclasses.replace(request, recipe=str(shipped.resolve(request.recipe)))
    cuda = torch.cuda.is_available()
    variants, skipped = select(request.variants, request.baseline, cuda)
    jobs = plan(request, variants)
    segment = math.ceil(request.steps / ROUNDS)
    max_steps = 1 + request.steps  # one warm-up step, left out of the timing
    pause_after = list(range(1 + segment, max_steps, segment))
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as scratch:
        check_recipe(request, jobs, scratch)
        load = os.getloadavg()[0]  # other work running now would slow the peak and every row down
        peaks = matmul_peak_gflops(cuda)  # before any variant's process starts, on a quiet machine
        print(f"tunelab bench: {len(variants)} variants x {request.steps} steps (+1 warm-up), taking turns in "
              f"segments of {segment} steps; matmul peak fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s",
              file=sys.stderr, flush=True)
        results, failed = bench_processes.run_interleaved(
            request.recipe, {v.name: (jobs[v.name][0], v.trainer) for v in variants}, max_steps, pause_after,
            request.eval_samples, scratch)
    rows = _rows(variants, jobs, results, request.baseline, peaks)
    report = {"recipe": request.recipe, "overrides": request.overrides, "steps": request.steps,
              "segment_steps": segment, "eval_samples": request.eval_samples, "baseline": request.baseline,
              "device": torch.cuda.get_device_name() if cuda else "cpu",
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "trl": trl.__version__, "peft": peft.__version__},
              "load_average_at_start": load, "cpu_count": os.cpu_count(), "matmul_peak_gflops": peaks,
              "flops": FLOPS_NOTE, "peak_memory": PEAK_MEMORY_NOTE,
              "rows": rows, "skipped": skipped, "failed": failed}
    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "bench.json", report)
    _plot(rows, request.baseline, out / "bench.png")
    report["written"] = [str(out / "bench.json"), str(out / "bench.png")]
    return report


def summary(report: dict) -> list[str]:
    """The table and what to read from it, for the terminal."""
    rows, baseline, peaks = report["rows"], report["baseline"], report["matmul_peak_gflops"]
    load, cpus = report["load_average_at_start"], report["cpu_count"] or 1
    lines = [_table(rows, baseline, report["device"] != "cpu", peaks), *_after_table(rows, baseline)]
    if report["device"] == "cpu" and load >= cpus:
        lines.append(f"busy: the load average was {load:.1f} on {cpus} CPUs as the bench began: other work shared "
                     f"the machine, so the matmul peak and every row are slower than this machine can go (the ratios "
                     f"less so, as the rows took turns)")
    lines += [f"skipped {name}: {reason}" for name, reason in report["skipped"].items()]
    lines += [f"failed {name}: {error}" for name, error in report["failed"].items()]
    lines.append(f"wrote {' and '.join(report['written'])}")
    return lines


def _rows(variants: list[Variant], jobs: dict, results: dict, baseline: str, peaks: dict[str, float]) -> list[dict]:
    rows = [{"variant": v.name, "description": v.description, "overrides": jobs[v.name][0],
             "learning_rate_from": jobs[v.name][1], **results[v.name]}
            for v in variants if v.name in results]
    for row in rows:
        row["peak_memory_mb"] = row.get("peak_cuda_allocated_mb", row["peak_rss_mb"])
        row["precision"] = "bf16" if row["settings"]["bf16"] else "fp32"
        row["peak_share"] = row["achieved_gflops"] / peaks[row["precision"]]
    base = next((row for row in rows if row["variant"] == baseline), None)
    for row in rows:
        for key in ("tokens_per_second", "step_time_ms", "peak_memory_mb", "eval_loss"):
            row[f"{key}_ratio"] = row[key] / base[key] if base and base[key] else None
    return rows


def _after_table(rows: list[dict], baseline: str) -> list[str]:
    """The lines under the table: what the TRL rows and the recipe row trained with, eval losses far from the
    baseline's, noisy rows."""
    lines = []
    for row in rows:
        if row["variant"] not in (TRL_DEFAULT, TRL_SAME_HPARAMS, TUNELAB):
            continue
        s = row["settings"]
        sampling = "packed" if s["packing"] else s["train_sampling_strategy"]
        lines.append(f"{row['variant']}: {s['trainer']}, lr {s['learning_rate']:g} ({row['learning_rate_from']}), "
                     f"{s['lr_scheduler_type']} schedule, {s['warmup_steps']:g} warm-up steps, batch {s['batch_size']} "
                     f"x {s['gradient_accumulation_steps']}, max_length {s['max_length']}, bf16={s['bf16']}, "
                     f"activation_checkpointing={s['activation_checkpointing']}, {sampling} batches, seed {s['seed']}")
    base = next((row for row in rows if row["variant"] == baseline), None)
    if base is not None and math.isfinite(base["eval_loss"]):
        far = [f"{r['variant']} {r['eval_loss']:.3f} ({100 * (r['eval_loss_ratio'] - 1):+.1f}%)" for r in rows
               if r["eval_loss_ratio"] is not None and abs(r["eval_loss_ratio"] - 1) > EVAL_GAP]
        if far:
            lines.append(f"eval loss over {EVAL_GAP:.0%} away from {baseline}'s {base['eval_loss']:.3f}: "
                         f"{', '.join(far)}; their speed ratios are not at equal loss")
    noisy = [r["variant"] for r in rows if r["step_time_ms_mean"] > NOISY * r["step_time_ms"]]
    if noisy:
        lines.append(f"noisy: {', '.join(noisy)} (mean step over {NOISY}x the median: something else used the "
                     f"machine; bench.json has every step's time)")
    return lines


def _table(rows: list[dict], baseline: str, cuda: bool, peaks: dict[str, float]) -> str:
    memory = ("peak alloc MB", "reserved MB") if cuda else ("peak RSS MB",)
    attentions = {r["attention"] for r in rows}
    attention = ("attention",) if len(attentions) > 1 else ()  # a column only where the rows differ
    header = ("variant", "description", *attention, "lr", "tokens/s", "GFLOP/s", "% peak", "padding", "ms/step",
              *memory, "final loss", "eval loss", f"x {baseline}")
    lines = []
    for r in rows:
        ratio = "n/a" if r["tokens_per_second_ratio"] is None else f"{r['tokens_per_second_ratio']:.2f}"
        memory_cells = ((f"{r['peak_cuda_allocated_mb']:.0f}", f"{r['peak_cuda_reserved_mb']:.0f}") if cuda
                        else (f"{r['peak_rss_mb']:.0f}",))
        lines.append((r["variant"], r["description"], *((r["attention"],) if attention else ()),
                      f"{r['settings']['learning_rate']:.1e}",
                      f"{r['tokens_per_second']:.0f}", f"{r['achieved_gflops']:.1f}",
                      f"{100 * r['peak_share']:.1f}% {r['precision']}", f"{100 * r['padding_fraction']:.1f}%",
                      f"{r['step_time_ms']:.0f}", *memory_cells, f"{r['final_loss']:.3f}", f"{r['eval_loss']:.3f}",
                      ratio))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text_columns = 2 + len(attention)  # left-aligned; the figures are right-aligned

    def render(cells) -> str:
        return "  ".join(str(c).ljust(w) if i < text_columns else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(render(header))
    memory_note = ("peak alloc/reserved MB: CUDA's peaks during training" if cuda else
                   "peak RSS MB: the variant's own process over its life, the Python runtime included")
    notes = [f"tokens/s: a step's non-padding tokens per second, ms/step: its time, each the median over the "
             f"steps after warm-up; x {baseline}: tokens/s ratio; lr: the learning rate the row trained at"
             + ("" if attention else f"; attention: {next(iter(attentions), 'n/a')} in every row"),
             f"GFLOP/s: nominal, tokens/s x (6N full fine-tuning, 4N + 2 N_trainable frozen base + adapter; N: "
             f"matmul weights, LM head in, embeddings out; attention's sequence-squared term left out)",
             f"% peak: of this machine's 2048x2048 matmul in the row's precision (fp32 {peaks['fp32']:.0f}, "
             f"bf16 {peaks['bf16']:.0f} GFLOP/s)",
             f"padding: padded share of batch positions; {memory_note}",
             f"final loss: training loss, mean over the last segment; eval loss: after training, the token-weighted "
             f"NLL of the same held-out records over the trained loss tokens, fp32",
             "every row, TRL's too, trains on the data tunelab train prepares: conversations come tokenized with "
             "tunelab's loss masks, which TRL turns into its labels"]
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
