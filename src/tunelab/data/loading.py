"""From a recipe's `data:` section to checked train and eval Datasets in TRL's shapes (or, for the
encoder formats, with their labels checked against the train data's label set)."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

from tunelab.config import DataConfig, Recipe
from tunelab.data import formats, labels, mixture
from tunelab.data.readers import Records, read_records
from tunelab.errors import UserError


@dataclass
class Splits:
    train: datasets.Dataset
    eval: datasets.Dataset
    report: dict = field(default_factory=dict)
    labels: list[str] | None = None  # the encoder formats' label names, in id order
    where: dict = field(default_factory=dict)  # split -> each record's file:line, for errors found later


def _read(spec: str, d: DataConfig, fmt: str, limit: int | None = None, way_out: str = "") -> Records:
    records = read_records(spec)
    try:
        formats.check_implied_format(records, fmt)
    except UserError as e:
        raise UserError(f"{e}{way_out}") from None
    if fmt == "text2text":
        formats.rename_text2text_fields(records, d.source_field, d.target_field)
    formats.check(records, fmt, d.tag_scheme)
    if limit is not None:
        records.rows, records.lines = records.rows[:limit], records.lines[:limit]
    return records


def load_dataset(spec: str, d: DataConfig, fmt: str | None = None, label_names: list[str] | None = None,
                 known_from: str = "the run's train data", way_out: str = "") -> datasets.Dataset:
    """One file or built-in set; for the encoder formats, its labels must be among `label_names`. `way_out`
    ends the message when the set says it is in another format than `fmt`."""
    return _load(spec, d, fmt, label_names, known_from, way_out)[0]


def _load(spec: str, d: DataConfig, fmt: str | None, label_names: list[str] | None, known_from: str,
          way_out: str) -> tuple[datasets.Dataset, list[str]]:
    fmt = fmt or d.format
    records = _read(spec, d, fmt, way_out=way_out)
    if fmt in labels.LABELLED:
        labels.use_names(records, fmt, label_names, bool(d.labels), known_from)
    return formats.to_dataset(records, fmt, d.loss_on), _locations(records)


def _locations(records: Records) -> list[str]:
    return [records.where(i) for i in range(len(records.rows))]


def train_sources(d: DataConfig) -> list[str]:
    """The path of each source data.train names: itself, or each entry of a mixture."""
    return [d.train] if isinstance(d.train, str) else [entry.path for entry in d.train]


def _read_train(recipe: Recipe, allowed_formats: tuple[str, ...]) -> tuple[list[mixture.Part], list[str] | None]:
    """Each train source read, checked and converted, and the encoder formats' label names (from all sources)."""
    d = recipe.data
    if isinstance(d.train, str):
        sources = [(_read(d.train, d, d.format, d.max_train_samples), d.format)]
    else:
        sources = []
        for i, entry in enumerate(d.train):
            fmt, at = entry.format or d.format, recipe.origin(f"data.train[{i}]")
            if fmt not in allowed_formats:
                raise UserError(f"{recipe.origin(f'data.train[{i}].format')}: data.train[{i}].format = {fmt!r} does "
                                f"not fit {recipe.recipe} (use {', '.join(allowed_formats)})")
            sources.append((_read(entry.path, d, fmt, way_out=f" (data.train[{i}], {at})"), fmt))
    names = None
    if d.format in labels.LABELLED:  # an encoder stage takes one format, so every source is in d.format
        names = labels.label_names(Records([row for r, _ in sources for row in r.rows], "data.train", []), d)
        known_from = "data.labels" if d.labels else "the train data"
        for records, fmt in sources:
            labels.use_names(records, fmt, names, bool(d.labels), known_from)
    return [(formats.to_dataset(records, fmt, d.loss_on), _locations(records)) for records, fmt in sources], names


def load_splits(recipe: Recipe, allowed_formats: tuple[str, ...]) -> Splits:
    d: DataConfig = recipe.data
    if d.format not in allowed_formats:
        raise UserError(f"{recipe.origin('data.format')}: data.format = {d.format!r} does not fit {recipe.recipe} "
                        f"(use {', '.join(allowed_formats)})")
    for key, applies in (("labels", ("classification", "pair")), ("mix", ("text2text",)), ("prefix", ("text2text",))):
        if getattr(d, key) and d.format not in applies:
            raise UserError(f"{recipe.origin('data.' + key)}: data.{key} applies to {' and '.join(applies)} data only; "
                            f"this recipe's data.format is {d.format!r}")
    parts, names = _read_train(recipe, allowed_formats)
    report = {}
    if not isinstance(d.train, str):
        (train, train_where), held_out, report["mixture"] = mixture.draw(recipe, parts)
    elif d.eval:
        (train, train_where), held_out = parts[0], None
    else:
        (train, train_where), held_out = mixture.hold_out(parts[0], recipe, d.train)
    if d.eval:
        # A recipe's built-in eval set stays when only data.train and data.format are overridden.
        way_out = (f"; it is data.eval ({recipe.origin('data.eval')}): give data.eval=FILE in the {d.format!r} "
                   f"format, or data.eval=null to hold out data.eval_fraction ({d.eval_fraction:g}) of the train data")
        eval_ds, eval_where = _load(d.eval, d, None, names, f"the train data ({', '.join(train_sources(d))})", way_out)
    else:
        eval_ds, eval_where = held_out
    if d.validation_fraction is not None:
        # Settings chosen on the eval split would be tuned to the test: evaluate on part of train instead.
        (train, train_where), (eval_ds, eval_where) = mixture.hold_out((train, train_where), recipe, "data.train",
                                                                       "validation_fraction")
        report["evaluated_on"] = f"validation: {d.validation_fraction:g} of the train records (data.eval unseen)"
    if d.max_eval_samples is not None:
        eval_ds = eval_ds.select(range(min(d.max_eval_samples, len(eval_ds))))
        eval_where = eval_where[:len(eval_ds)]
    return Splits(train, eval_ds, {"train_records": len(train), "eval_records": len(eval_ds), **report}, names,
                  {"train": train_where, "eval": eval_where})


def apply_length_limit(ds: datasets.Dataset, lengths: list[int], d: DataConfig, split: str,
                       report: dict) -> datasets.Dataset:
    """Count the records longer than max_length; drop them if the recipe says so (the rest are truncated)."""
    over = [i for i, n in enumerate(lengths) if n > d.max_length]
    report[f"{split}_overlong"] = len(over)
    if over:
        print(f"tunelab: {len(over)} of {len(ds)} {split} records are longer than data.max_length="
              f"{d.max_length} tokens: {'dropped' if d.overlong == 'drop' else 'truncated'}")
    if over and d.overlong == "drop":
        keep = sorted(set(range(len(ds))) - set(over))
        if not keep:
            raise UserError(f"data.max_length={d.max_length}: every {split} record is longer; nothing left to use")
        ds = ds.select(keep)
    return ds
