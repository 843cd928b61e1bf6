"""A compressed run: what `tunelab quantize` and `tunelab prune` write, and what loading reads back.

OUT is an ordinary run directory, so `tunelab eval`, `generate` and `compare` read it as they read any other:

    recipe.yaml        the source run's recipe, unchanged (eval scores the same eval split)
    model/             the compressed model (save_pretrained; a LoRA source is merged first) and its tokenizer
    compression.json   {"kind", "method", "label", "source", "settings"}: how OUT was made; for a method whose result
                       cannot be saved (torch's dynamic int8) model/ holds the float weights and loading quantizes
                       them again from these settings (`on_load`)
    metrics.json       eval after (the keys every run has) and "compression": eval, weights on disk and generation
                       speed before and after
    README.md          a model card line saying how it was made

Everything that can be wrong with the input (the run, OUT, the settings) is refused before anything is written; the
run is staged in `OUT.partial` and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from tunelab import checkpoints, rundir
from tunelab.config import Recipe
from tunelab.errors import UserError

COMPRESSION_FILE = "compression.json"
SPEED_PROMPTS = 4  # eval prompts timed one at a time (batch 1: a chat's latency)
SPEED_TOKENS = 32  # tokens generated per prompt, forced, so that every model writes as many


@dataclass
class Source:
    run_dir: Path
    recipe: Recipe
    stage: str
    model: torch.nn.Module  # merged (a LoRA run's adapter folded in), in eval mode
    tokenizer: object


def check_out(run_dir: str, out: Path, overwrite: bool) -> None:
    if out.resolve() == Path(run_dir).resolve():
        raise UserError(f"{out}: is the source run; write the compressed run to another directory")
    if (out.exists() or rundir.partial_path(out).exists()) and not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it, or choose another output directory")


def load_source(run_dir: str) -> Source:
    """A finished causal LM run, merged: quantization and pruning act on whole weight matrices."""
    from tunelab.families import causal_lm, family_of

    if not checkpoints.is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a finished run directory (no recipe.yaml with adapter/ or model/)")
    recipe = checkpoints.run_recipe(run_dir)
    family, stage = family_of(recipe.recipe, str(Path(run_dir) / "recipe.yaml"))
    if family is not causal_lm or stage == "reward":
        raise UserError(f"{run_dir}: a {recipe.recipe} run; quantize and prune take causal LM runs that generate text "
                        f"(sft, dpo, distill, ...)")
    made = read(Path(run_dir))
    if made and made["kind"] == "quantize":  # a pruned run is an ordinary float model: it may be quantized
        raise UserError(f"{run_dir}: already quantized ({made['label']} of {made['source']}); quantize or prune its "
                        f"source run instead")
    model, tokenizer = causal_lm.load_run(run_dir, merge=True)
    return Source(Path(run_dir), recipe, stage, model.eval(), tokenizer)


def read(run_dir: Path) -> dict | None:
    path = Path(run_dir) / COMPRESSION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def on_load(run_dir: Path, model, merge: bool):
    """The model of a run as its compression.json says to use it: a dynamic-int8 run is quantized again here."""
    made = read(run_dir)
    if made is None or made["method"] != "dynamic-int8":
        return model
    if merge:
        raise UserError(f"{run_dir}: a dynamic-int8 run is quantized on load, for inference; train from its source "
                        f"run ({made['source']}) instead")
    from tunelab.compression.quantize import dynamic_int8

    return dynamic_int8(model)


def eval_rows(source: Source, max_samples: int | None) -> list[dict]:
    """The records `tunelab eval` scores the run on: its eval split (the good replies of a preference run)."""
    from tunelab import alignment
    from tunelab.data.loading import load_splits
    from tunelab.families import causal_lm

    if max_samples is not None:
        source.recipe.eval.max_samples = max_samples
    rows = load_splits(source.recipe, causal_lm.FORMATS[source.stage]).eval.to_list()
    return alignment.good_replies(rows)


def scores(model, tokenizer, recipe: Recipe, rows: list[dict]) -> dict:
    from tunelab.evaluation.causal_lm import evaluate

    return evaluate(model, tokenizer, recipe, rows)


@torch.no_grad()
def generation_speed(model, tokenizer, rows: list[dict]) -> float:
    """Generated tokens per second, greedy, batch 1, SPEED_TOKENS forced per prompt (no early stop), after one
    warm-up call; the prompts are the first eval records' (a text record's first 32 tokens)."""
    from tunelab.data.formats import prompt_and_reference
    from tunelab.evaluation.generation import render_prompt

    prompts = []
    for row in rows[:SPEED_PROMPTS]:
        pair = prompt_and_reference(row)
        prompts.append(render_prompt(tokenizer, pair[0]) if pair else tokenizer.decode(
            tokenizer(row.get("text", ""), add_special_tokens=False)["input_ids"][:32]))
    device = next(model.parameters()).device
    encoded = [tokenizer(p, return_tensors="pt", add_special_tokens=False).to(device) for p in prompts if p]
    if not encoded:
        return float("nan")
    settings = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    model.generate(**encoded[0], max_new_tokens=2, **settings)
    started = time.perf_counter()
    for enc in encoded:
        model.generate(**enc, max_new_tokens=SPEED_TOKENS, min_new_tokens=SPEED_TOKENS, **settings)
    return round(len(encoded) * SPEED_TOKENS / (time.perf_counter() - started), 1)


def compress(source: Source, out: Path, made: dict, write_model: Callable[[Path, Path], dict],
             max_samples: int | None, overwrite: bool) -> dict:
    """Write OUT: `write_model(float_dir, model_dir)` saves the compressed model into model_dir (float_dir holds the
    source merged, in float, saved as it is) and returns the method's own facts. Scores the source, then OUT
    loaded the way `tunelab eval` loads it. Returns OUT's metrics."""
    from tunelab.families import causal_lm

    rows = eval_rows(source, max_samples)
    before = {"eval": scores(source.model, source.tokenizer, source.recipe, rows),
              "generate_tokens_per_second": generation_speed(source.model, source.tokenizer, rows),
              "total_params": rundir.count_params(source.model)[1]}
    staging = rundir.partial_path(out)
    shutil.rmtree(staging, ignore_errors=True)
    float_dir, model_dir = staging / "source-float", staging / "model"
    source.model.save_pretrained(float_dir)
    before["weights_mb"] = rundir.weights_mb(float_dir)
    facts = write_model(float_dir, model_dir)
    shutil.rmtree(float_dir, ignore_errors=True)
    source.tokenizer.save_pretrained(model_dir)
    source.model.generation_config.save_pretrained(model_dir)
    shutil.copyfile(source.run_dir / "recipe.yaml", staging / "recipe.yaml")
    made = {**made, "source": str(source.run_dir.resolve())}
    earlier = read(source.run_dir)
    if earlier:  # pruned, then quantized or pruned again: the label says both
        made["label"] = f"{earlier['label']}, {made['label']}"
    rundir.write_json(staging / COMPRESSION_FILE, made)

    model, tokenizer = causal_lm.load_run(staging)  # as `tunelab eval OUT` will
    after = {"eval": scores(model, tokenizer, source.recipe, rows),
             "generate_tokens_per_second": generation_speed(model, tokenizer, rows),
             "weights_mb": rundir.weights_mb(model_dir), **facts}
    after.setdefault("total_params", before["total_params"])
    metrics = {"recipe": source.recipe.recipe, "method": source.recipe.adapter.method,
               "trainable_params": 0, "total_params": after["total_params"], "eval": after["eval"],
               "saved_weights_mb": after["weights_mb"],
               "compression": {**made, "eval_records": len(rows[:source.recipe.eval.max_samples]),
                               "before": _without_samples(before), "after": _without_samples(after)},
               **rundir.peak_memory_mb()}
    rundir.write_json(staging / "metrics.json", metrics)
    (staging / "README.md").write_text(model_card(made, metrics), encoding="utf-8")
    rundir.finalize(staging, out)
    return metrics


def _without_samples(figures: dict) -> dict:
    return {**figures, "eval": {k: v for k, v in figures["eval"].items() if k != "samples"}}


def model_card(made: dict, metrics: dict) -> str:
    c = metrics["compression"]
    rows = "\n".join(f"| {k} | {c['before']['eval'][k]:.4g} | {v:.4g} |" for k, v in c["after"]["eval"].items()
                     if isinstance(v, float) and k in c["before"]["eval"])
    reload = ("model/ holds the float weights: torch's dynamic int8 cannot be saved, so tunelab quantizes them again "
              "each time it loads this run" if made["method"] == "dynamic-int8" else
              "model/ loads with `AutoModelForCausalLM.from_pretrained('model')` alone")
    return (f"# {made['label']} of {made['source']}\n\n"
            f"Made with `{made['command']}`. {reload}.\n\n"
            f"- weights on disk: {c['before']['weights_mb']:.3g} MB -> {c['after']['weights_mb']:.3g} MB\n"
            f"- parameters: {c['before']['total_params']:,} -> {c['after']['total_params']:,}\n"
            f"- generation: {c['before']['generate_tokens_per_second']} -> {c['after']['generate_tokens_per_second']} "
            f"tokens/s (greedy, batch 1)\n\n"
            f"| eval metric | before | after |\n|---|---|---|\n{rows}\n")
