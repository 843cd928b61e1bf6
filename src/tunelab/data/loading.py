"""From a recipe's `data:` section to checked train and eval Datasets in TRL's shapes."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

from tunelab.config import DataConfig, Recipe
from tunelab.data import formats
from tunelab.data.readers import read_records
from tunelab.errors import UserError


@dataclass
class Splits:
    train: datasets.Dataset
    eval: datasets.Dataset
    report: dict = field(default_factory=dict)


def load_dataset(spec: str, fmt: str, loss_on: str, limit: int | None = None) -> datasets.Dataset:
    records = read_records(spec)
    formats.check(records, fmt)
    if limit is not None:
        records.rows, records.lines = records.rows[:limit], records.lines[:limit]
    return formats.to_dataset(records, fmt, loss_on)


def load_splits(recipe: Recipe, allowed_formats: tuple[str, ...]) -> Splits:
    d: DataConfig = recipe.data
    if d.format not in allowed_formats:
        raise UserError(f"{recipe.origin('data.format')}: data.format = {d.format!r} does not fit {recipe.recipe} "
                        f"(use {', '.join(allowed_formats)})")
    train = load_dataset(d.train, d.format, d.loss_on, d.max_train_samples)
    if d.eval:
        eval_ds = load_dataset(d.eval, d.format, d.loss_on)
    else:
        if not 0 < d.eval_fraction < 1:
            raise UserError(f"{recipe.origin('data.eval_fraction')}: with no data.eval, data.eval_fraction must be "
                            f"between 0 and 1 (got {d.eval_fraction})")
        if len(train) < 2:
            raise UserError(f"{d.train}: {len(train)} record is too few to hold out an eval split; give data.eval")
        parts = train.train_test_split(test_size=d.eval_fraction, seed=d.seed)
        train, eval_ds = parts["train"], parts["test"]
    if d.max_eval_samples is not None:
        eval_ds = eval_ds.select(range(min(d.max_eval_samples, len(eval_ds))))
    return Splits(train, eval_ds, {"train_records": len(train), "eval_records": len(eval_ds)})


def apply_length_limit(ds: datasets.Dataset, lengths: list[int], d: DataConfig, split: str,
                       report: dict) -> datasets.Dataset:
    """Count the records longer than max_length; drop them if the recipe says so (TRL truncates the rest)."""
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
