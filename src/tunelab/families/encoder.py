"""Encoder recipes for BERT-class models with the HF Trainer: classify (text -> label), pair (text +
text_pair -> label: similarity, entailment) and tag (a label per word: named entities, address parts).

The Trainer does the work; this module tokenizes (aligning word tags to sub-tokens), chooses the
Trainer's arguments and writes the run directory. PEFT's SEQ_CLS and TOKEN_CLS task types train the
fresh head in full beside the adapter (modules_to_save), so an adapter run saves its head too. The
label names are stored in the run (labels.json) and in the model config (id2label), so a saved model
predicts names.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import transformers
from transformers.utils import logging as hf_logging
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
                          DataCollatorForTokenClassification, DataCollatorWithPadding, TrainingArguments)

from tunelab import adapters, checkpoints, rundir
from tunelab.config import GenerateConfig, ModelConfig, Recipe, trainer_args
from tunelab.data.encoder_inputs import encode, max_length
from tunelab.data.loading import apply_length_limit, load_dataset, load_splits
from tunelab.errors import UserError
from tunelab.evaluation.encoder import class_probabilities, evaluate, spans, split_words, word_tags
from tunelab.families import Job, PredictRequest, split_report, stage_of

FORMATS = {"classify": ("classification",), "pair": ("pair",), "tag": ("tagging",)}
GENERATES = False
CHAT = False
TRAIN_DEFAULTS = {"logging_steps": 10, "save_steps": 200}
LABELS_FILE = "labels.json"


def auto_class(stage: str):
    return AutoModelForTokenClassification if stage == "tag" else AutoModelForSequenceClassification


def check(recipe: Recipe, stage: str) -> None:
    adapters.check_method(recipe)


def data_report(recipe: Recipe, stage: str) -> dict:
    return split_report(recipe, FORMATS[stage])


def build_args(recipe: Recipe, stage: str, output_dir: Path) -> TrainingArguments:
    return trainer_args(TrainingArguments, recipe, rundir.trainer_defaults(**TRAIN_DEFAULTS), output_dir=str(output_dir))


def load_model(model_cfg: ModelConfig, stage: str, names: list[str]):
    """The checkpoint with a fresh head for `names` (a head it already has is replaced if the sizes differ)."""
    name = model_cfg.name_or_path
    if checkpoints.is_family_run(name, "encoder", "an encoder run"):
        if not (Path(name) / "model").is_dir():
            raise UserError(f"model.name_or_path = {name!r}: an adapter run; run `tunelab merge {name} OUT` "
                            f"and start from OUT")
        name = str(Path(name) / "model")
    path = checkpoints.resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if not tokenizer.is_fast:
        raise UserError(f"model.name_or_path = {name!r}: tunelab needs a fast tokenizer (word ids for tagging)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would list the fresh head as "MISSING", which is the point
    try:
        model = auto_class(stage).from_pretrained(
            path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True, dtype=checkpoints.DTYPES[model_cfg.dtype],
            attn_implementation=model_cfg.attn_implementation, trust_remote_code=model_cfg.trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def _tokenized(ds, tokenizer, stage: str, names: list[str], limit: int):
    return ds.map(lambda b: encode(tokenizer, stage, b, limit, names), batched=True, remove_columns=ds.column_names)


def prepare(recipe: Recipe, stage: str, args) -> Job:
    splits = load_splits(recipe, FORMATS[stage])
    transformers.set_seed(args.seed)  # the fresh head and the adapter draw their weights next
    model, tokenizer = load_model(recipe.model, stage, splits.labels)
    adapters.check_model_fits(recipe, model)
    limit = max_length(recipe, model)
    for name in ("train", "eval"):
        ds = getattr(splits, name)
        lengths = [len(ids) for ids in ds.map(lambda b: encode(tokenizer, stage, b, None), batched=True)["input_ids"]]
        setattr(splits, name, apply_length_limit(ds, lengths, dataclasses.replace(recipe.data, max_length=limit),
                                                 name, splits.report))
    model = adapters.wrap(model, recipe, task="tag" if stage == "tag" else "classify")
    collator = (DataCollatorForTokenClassification if stage == "tag" else DataCollatorWithPadding)(tokenizer)
    return Job(model=model, train_dataset=_tokenized(splits.train, tokenizer, stage, splits.labels, limit),
               eval_dataset=_tokenized(splits.eval, tokenizer, stage, splits.labels, limit),
               evaluate=lambda trained, run_dir: evaluate(trained, tokenizer, recipe, stage, splits.labels,
                                                          splits.eval, run_dir),
               auto_class=auto_class(stage).__name__,
               trainer_kwargs={"data_collator": collator, "processing_class": tokenizer}, processors=(tokenizer,),
               files={LABELS_FILE: {"labels": splits.labels, "tag_scheme": recipe.data.tag_scheme}},
               report=splits.report)


def run_labels(run_dir: str | Path) -> list[str]:
    return json.loads((Path(run_dir) / LABELS_FILE).read_text(encoding="utf-8"))["labels"]


def load_run(run_dir: str | Path, merge: bool = False):
    """(model, tokenizer) of a finished encoder run, in eval mode."""
    run_dir = Path(run_dir)
    recipe = checkpoints.run_recipe(run_dir)
    _, stage = stage_of(recipe.recipe, str(run_dir / "recipe.yaml"))
    if (run_dir / "model").is_dir():
        path = run_dir / "model"
        return auto_class(stage).from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    base, _ = load_model(recipe.model, stage, run_labels(run_dir))
    model = checkpoints.attach_adapter(base, run_dir, recipe.adapter.method, merge)
    return model.eval(), AutoTokenizer.from_pretrained(run_dir / "adapter")


def base_model_of(run_dir: str | Path):
    """The run's starting checkpoint with a fresh head (seeded as in training), for --baseline."""
    recipe = checkpoints.run_recipe(run_dir)
    _, stage = stage_of(recipe.recipe, str(Path(run_dir) / "recipe.yaml"))
    transformers.set_seed(build_args(recipe, stage, Path(run_dir)).seed)
    model, tokenizer = load_model(recipe.model, stage, run_labels(run_dir))
    return model.eval(), tokenizer


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": metrics, "baseline": metrics of the base model with a fresh head (with --baseline)}."""
    names = run_labels(run_dir)
    if fmt and fmt not in FORMATS[stage]:
        raise UserError(f"--format {fmt}: a {recipe.recipe} run evaluates {', '.join(FORMATS[stage])} data")
    if data:
        ds = load_dataset(data, recipe.data, fmt, names)
    else:
        splits = load_splits(recipe, FORMATS[stage])
        if splits.labels != names:
            raise UserError(f"{recipe.origin('data.train')}: its labels changed since {run_dir} was trained "
                            f"(run: {', '.join(names)}); evaluate with --data FILE")
        ds = splits.eval
    model, tokenizer = load_run(run_dir)
    plots = None if data else run_dir  # the run's confusion.png belongs to its own eval split
    results = {"model": evaluate(model, tokenizer, recipe, stage, names, ds, plots)}
    if baseline:
        base, base_tokenizer = base_model_of(run_dir)
        results["baseline"] = evaluate(base, base_tokenizer, recipe, stage, names, ds, plots, prefix="baseline_")
    return results


def generate(loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
    raise UserError(f"a {recipe.recipe} run labels text and does not generate it; use `tunelab predict`")


def predict(run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
    """Each text's labels with probabilities, most likely first ({"input", "pair", "labels"}), or its entity
    spans ({"input", "entities"})."""
    texts, pairs = request.texts, request.text_pairs
    if not texts or request.images or request.labels:
        raise UserError(f"predict: an encoder run ({recipe.recipe}) labels texts: give --text TEXT "
                        f"(--image and --labels are for CLIP runs)")
    if stage == "pair" and len(pairs) != len(texts):
        raise UserError(f"predict: a pair run needs one --text-pair for each --text ({len(texts)} given, "
                        f"{len(pairs)} pairs)")
    if stage != "pair" and pairs:
        raise UserError(f"predict: --text-pair is for pair runs; {run_dir} is {recipe.recipe}")
    if any(not t.strip() for t in [*texts, *pairs]):
        raise UserError("predict: --text is empty")
    names = run_labels(run_dir)
    model, tokenizer = load_run(run_dir)
    limit = max_length(recipe, model)
    if stage == "tag":
        words = [split_words(t) for t in texts]
        return [{"input": text, "entities": spans(w, tags)}
                for text, w, tags in zip(texts, words, word_tags(model, tokenizer, words, names, limit, 32))]
    records = {"text": texts, **({"text_pair": pairs} if stage == "pair" else {})}
    probs = class_probabilities(model, tokenizer, stage, records, limit, 32)
    results = []
    for i, text in enumerate(texts):
        top = probs[i].topk(min(request.top, len(names)))
        results.append({"input": text, "pair": pairs[i] if pairs else None,
                        "labels": [(names[j], p) for p, j in zip(top.values.tolist(), top.indices.tolist())]})
    return results
