"""From a recipe's `data:` section to checked train and eval Datasets in TRL's shapes (or, for the
encoder formats, with their labels checked against the train data's label set)."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

from tunelab.config import DataConfig, Recipe
from tunelab.data import formats, labels
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


def load_splits(recipe: Recipe, allowed_formats: tuple[str, ...]) -> Splits:
    d: DataConfig = recipe.data
    if d.format not in allowed_formats:
        raise UserError(f"{recipe.origin('data.format')}: data.format = {d.format!r} does not fit {recipe.recipe} "
                        f"(use {', '.join(allowed_formats)})")
    for key, applies in (("labels", ("classification", "pair")), ("mix", ("text2text",)), ("prefix", ("text2text",))):
        if getattr(d, key) and d.format not in applies:
            raise UserError(f"{recipe.origin('data.' + key)}: data.{key} applies to {' and '.join(applies)} data only; "
                            f"this recipe's data.format is {d.format!r}")
    train_records = _read(d.train, d, d.format, d.max_train_samples)
    names = None
    if d.format in labels.LABELLED:
        names = labels.label_names(train_records, d)
        known_from = "data.labels" if d.labels else "the train data"
        labels.use_names(train_records, d.format, names, bool(d.labels), known_from)
    train, train_where = formats.to_dataset(train_records, d.format, d.loss_on), _locations(train_records)
    if d.eval:
        # A recipe's built-in eval set stays when only data.train and data.format are overridden.
        way_out = (f"; it is data.eval ({recipe.origin('data.eval')}): give data.eval=FILE in the {d.format!r} "
                   f"format, or data.eval=null to hold out data.eval_fraction ({d.eval_fraction:g}) of the train data")
        eval_ds, eval_where = _load(d.eval, d, None, names, f"the train data ({d.train})", way_out)
    else:
        if not 0 < d.eval_fraction < 1:
            raise UserError(f"{recipe.origin('data.eval_fraction')}: with no data.eval, data.eval_fraction must be "
                            f"between 0 and 1 (got {d.eval_fraction})")
        if len(train) < 2:
            raise UserError(f"{d.train}: {len(train)} record is too few to hold out an eval split; give data.eval")
        parts = train.add_column("_row", range(len(train))).train_test_split(test_size=d.eval_fraction, seed=d.seed)
        eval_where = [train_where[row] for row in parts["test"]["_row"]]
        train_where = [train_where[row] for row in parts["train"]["_row"]]
        train, eval_ds = parts["train"].remove_columns("_row"), parts["test"].remove_columns("_row")
    if d.max_eval_samples is not None:
        eval_ds = eval_ds.select(range(min(d.max_eval_samples, len(eval_ds))))
        eval_where = eval_where[:len(eval_ds)]
    return Splits(train, eval_ds, {"train_records": len(train), "eval_records": len(eval_ds)}, names,
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
