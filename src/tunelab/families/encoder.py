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
import time
from pathlib import Path

import transformers
from peft import get_peft_model
from transformers.utils import logging as hf_logging
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
                          DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer, TrainingArguments)

from tunelab import adapters, models, rundir
from tunelab.config import ModelConfig, Recipe, to_dict, trainer_args
from tunelab.data.loading import apply_length_limit, load_splits
from tunelab.errors import UserError

FORMATS = {"classify": ("classification",), "pair": ("pair",), "tag": ("tagging",)}
TRAIN_DEFAULTS = {"logging_steps": 10, "save_steps": 200}
LABELS_FILE = "labels.json"
IGNORE = -100  # the label the loss skips: special tokens and the later sub-tokens of a word


def auto_class(stage: str):
    return AutoModelForTokenClassification if stage == "tag" else AutoModelForSequenceClassification


def build_args(recipe: Recipe, stage: str, output_dir: Path) -> TrainingArguments:
    return trainer_args(TrainingArguments, recipe, rundir.trainer_defaults(**TRAIN_DEFAULTS), output_dir=str(output_dir))


def load_model(model_cfg: ModelConfig, stage: str, names: list[str]):
    """The checkpoint with a fresh head for `names` (a head it already has is replaced if the sizes differ)."""
    name = model_cfg.name_or_path
    if models.is_family_run(name, "encoder", "an encoder run"):
        if not (Path(name) / "model").is_dir():
            raise UserError(f"model.name_or_path = {name!r}: an adapter run; run `tunelab merge {name} OUT` "
                            f"and start from OUT")
        name = str(Path(name) / "model")
    path = models.resolve(name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if not tokenizer.is_fast:
        raise UserError(f"model.name_or_path = {name!r}: tunelab needs a fast tokenizer (word ids for tagging)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would list the fresh head as "MISSING", which is the point
    try:
        model = auto_class(stage).from_pretrained(
            path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True, dtype=models.DTYPES[model_cfg.dtype],
            attn_implementation=model_cfg.attn_implementation, trust_remote_code=model_cfg.trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def max_length(recipe: Recipe, model) -> int:
    """data.max_length, but never past the model's learned positions, less the positions PEFT's virtual
    tokens take (prompt tuning prepends them; prefix tuning shifts the position ids by their number)."""
    positions = getattr(model.config, "max_position_embeddings", recipe.data.max_length)
    if recipe.adapter.method in adapters.PROMPT_LEARNING:
        positions -= recipe.adapter.num_virtual_tokens
    return min(recipe.data.max_length, positions)


def align_tags(word_ids: list[int | None], tag_ids: list[int]) -> list[int]:
    """The first sub-token of a word carries the word's tag; its other sub-tokens and the special tokens
    get IGNORE, so the loss counts each word once."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else tag_ids[word])
        previous = word
    return labels


def encode(tokenizer, stage: str, batch: dict, limit: int | None, names: list[str] | None = None) -> dict:
    """Tokenize a batch of records (truncated to `limit` tokens; None: untruncated), with label ids if `names`."""
    truncate = {"truncation": True, "max_length": limit} if limit else {}
    index = {n: i for i, n in enumerate(names or [])}
    if stage == "tag":
        enc = tokenizer(batch["tokens"], is_split_into_words=True, **truncate)
        if names:
            enc["labels"] = [align_tags(enc.word_ids(i), [index[t] for t in tags]) for i, tags in enumerate(batch["tags"])]
        return enc
    enc = tokenizer(batch["text"], batch["text_pair"] if stage == "pair" else None, **truncate)
    if names:
        enc["labels"] = [index[label] for label in batch["label"]]
    return enc


def _tokenized(ds, tokenizer, stage: str, names: list[str], limit: int):
    return ds.map(lambda b: encode(tokenizer, stage, b, limit, names), batched=True, remove_columns=ds.column_names)


def train(recipe: Recipe, stage: str, out: Path, resume: bool = False, overwrite: bool = False) -> dict:
    from tunelab.evaluation.encoder import evaluate

    started = time.time()
    adapters.check_method(recipe)
    staging = rundir.partial_path(out)
    args = build_args(recipe, stage, staging)
    rundir.check_free(out, resume, overwrite)
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

    staging = rundir.stage(out, resume, overwrite, args.process_index == 0)
    peft_config = adapters.peft_config(recipe, task="tag" if stage == "tag" else "classify")
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    collator = (DataCollatorForTokenClassification if stage == "tag" else DataCollatorWithPadding)(tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=_tokenized(splits.train, tokenizer, stage, splits.labels, limit),
                      data_collator=collator, processing_class=tokenizer,
                      callbacks=[rundir.TrainLogCallback(staging / "train_log.jsonl"), rundir.RankReportCallback()])
    result = rundir.train_and_save(trainer, staging, recipe.adapter.method, resume, (tokenizer,))
    if result is None:
        return {}
    rundir.write_json(staging / LABELS_FILE, {"labels": splits.labels, "tag_scheme": recipe.data.tag_scheme})
    scores = evaluate(trainer.model, tokenizer, recipe, stage, splits.labels, splits.eval, staging)
    metrics = rundir.run_metrics(recipe, trainer, result, scores, splits.report, started)
    rundir.write_run(staging, out, to_dict(recipe), metrics, auto_class(stage).__name__)
    return metrics


def run_labels(run_dir: str | Path) -> list[str]:
    return json.loads((Path(run_dir) / LABELS_FILE).read_text(encoding="utf-8"))["labels"]


def load_run(run_dir: str | Path, merge: bool = False):
    """(model, tokenizer) of a finished encoder run, in eval mode."""
    from tunelab.families import stage_of

    run_dir = Path(run_dir)
    recipe = models.run_recipe(run_dir)
    _, stage = stage_of(recipe.recipe, str(run_dir / "recipe.yaml"))
    if (run_dir / "model").is_dir():
        path = run_dir / "model"
        return auto_class(stage).from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    base, _ = load_model(recipe.model, stage, run_labels(run_dir))
    model = models.attach_adapter(base, run_dir, recipe.adapter.method, merge)
    return model.eval(), AutoTokenizer.from_pretrained(run_dir / "adapter")


def base_model_of(run_dir: str | Path):
    """The run's starting checkpoint with a fresh head (seeded as in training), for --baseline."""
    from tunelab.families import stage_of

    recipe = models.run_recipe(run_dir)
    _, stage = stage_of(recipe.recipe, str(Path(run_dir) / "recipe.yaml"))
    transformers.set_seed(build_args(recipe, stage, Path(run_dir)).seed)
    model, tokenizer = load_model(recipe.model, stage, run_labels(run_dir))
    return model.eval(), tokenizer


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": metrics, "baseline": metrics of the base model with a fresh head (with --baseline)}."""
    from tunelab.data.loading import load_dataset
    from tunelab.evaluation.encoder import evaluate

    names = run_labels(run_dir)
    if fmt and fmt not in FORMATS[stage]:
        raise UserError(f"--format {fmt}: a {recipe.recipe} run evaluates {', '.join(FORMATS[stage])} data")
    if data:
        ds = load_dataset(data, recipe.data, fmt, names)
    else:
        splits = load_splits(recipe, FORMATS[stage])
        if splits.labels != names:
            raise UserError(f"{recipe.data.train}: its labels changed since {run_dir} was trained "
                            f"(run: {', '.join(names)}); evaluate with --data FILE")
        ds = splits.eval
    model, tokenizer = load_run(run_dir)
    plots = None if data else run_dir  # the run's confusion.png belongs to its own eval split
    results = {"model": evaluate(model, tokenizer, recipe, stage, names, ds, plots)}
    if baseline:
        base, base_tokenizer = base_model_of(run_dir)
        results["baseline"] = evaluate(base, base_tokenizer, recipe, stage, names, ds, plots, prefix="baseline_")
    _print_report(results["model"], stage)
    return results


def _print_report(metrics: dict, stage: str) -> None:
    per = metrics["per_type" if stage == "tag" else "per_class"]
    print(f"{'entity type' if stage == 'tag' else 'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, m in per.items():
        print(f"{name:<20}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{int(m['support']):>10}")
    if "confusion_png" in metrics:
        print(f"confusion matrix: {metrics['confusion_png']}")


def predict(run_dir: Path, recipe: Recipe, stage: str, args) -> list[str]:
    """Lines to print: each text's labels with probabilities, or its entity spans."""
    from tunelab.evaluation.encoder import class_probabilities, spans, split_words, word_tags

    if not args.text or args.image or args.labels:
        raise UserError(f"predict: an encoder run ({recipe.recipe}) labels texts: give --text TEXT "
                        f"(--image and --labels are for CLIP runs)")
    pairs = args.text_pair or []
    if stage == "pair" and len(pairs) != len(args.text):
        raise UserError(f"predict: a pair run needs one --text-pair for each --text ({len(args.text)} given, "
                        f"{len(pairs)} pairs)")
    if stage != "pair" and pairs:
        raise UserError(f"predict: --text-pair is for pair runs; {run_dir} is {recipe.recipe}")
    if any(not t.strip() for t in [*args.text, *pairs]):
        raise UserError("predict: --text is empty")
    names = run_labels(run_dir)
    model, tokenizer = load_run(run_dir)
    limit = max_length(recipe, model)
    lines = []
    if stage == "tag":
        words = [split_words(t) for t in args.text]
        for text, w, tags in zip(args.text, words, word_tags(model, tokenizer, words, names, limit, 32)):
            lines.append(text)
            found = spans(w, tags)
            lines += [f"  {s['type']:<16} {s['text']}" for s in found] or ["  (no entities)"]
        return lines
    records = {"text": args.text, **({"text_pair": pairs} if stage == "pair" else {})}
    probs = class_probabilities(model, tokenizer, stage, records, limit, 32)
    for i, text in enumerate(args.text):
        top = probs[i].topk(min(args.top, len(names)))
        lines.append(f"{names[top.indices[0]]}\t{text}" + (f"  ||  {pairs[i]}" if pairs else ""))
        lines += [f"  {names[j]:<20} {p:.3f}" for p, j in zip(top.values.tolist(), top.indices.tolist())]
    return lines
