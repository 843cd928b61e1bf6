"""Held-out eval splits and weighted mixtures of train sources (`data.train` as a list of DataSource entries).

A source's weight takes round(weight * records) of its train records: whole copies of every record, then a
seeded sample without replacement for the rest (a count takes `count` records by the same rule). With no
data.eval, each source's eval part is held out before its weight is applied, so no copy of an eval record
is trained on. Records keep their file:line through every step, copies included.
"""

from __future__ import annotations

import random

import datasets

from tunelab.config import DataSource, Recipe
from tunelab.errors import UserError

Part = tuple[datasets.Dataset, list[str]]  # records, and each one's file:line


def hold_out(part: Part, recipe: Recipe, name: str, key: str = "eval_fraction") -> tuple[Part, Part]:
    """(train, held out): data.eval_fraction (or data.validation_fraction) of the records, drawn by data.seed."""
    d = recipe.data
    ds, where = part
    fraction = getattr(d, key)
    if not 0 < fraction < 1:
        held = "no data.eval" if key == "eval_fraction" else "a validation split"
        raise UserError(f"{recipe.origin('data.' + key)}: with {held}, data.{key} must be between 0 and 1 "
                        f"(got {fraction})")
    if len(ds) < 2:
        split = "an eval split; give data.eval" if key == "eval_fraction" else "a validation split"
        raise UserError(f"{name}: {len(ds)} record is too few to hold out {split}")
    parts = ds.add_column("_row", range(len(ds))).train_test_split(test_size=fraction, seed=d.seed)
    train, test = ((parts[s].remove_columns("_row"), [where[row] for row in parts[s]["_row"]]) for s in ("train", "test"))
    return train, test


def draw(recipe: Recipe, parts: list[Part]) -> tuple[Part, Part | None, list[dict]]:
    """(the mixed train records, shuffled and cut to data.max_train_samples; the union of the sources' held-out
    records, shuffled, or None when data.eval is given; the report's line per source). `parts` are the sources
    of data.train, read and converted, in its order."""
    d = recipe.data
    _check_columns(recipe, parts)
    rng = random.Random(d.seed)
    trains, held, report = [], [], []
    for i, (entry, part) in enumerate(zip(d.train, parts)):
        if not d.eval:
            # The same seed for every source: a source listed twice holds out the same records both times.
            part, eval_part = hold_out(part, recipe, f"{recipe.origin(f'data.train[{i}]')}: {entry.path}")
            held.append(eval_part)
        available = len(part[0])
        rows = _take(available, _wanted(recipe, i, entry, available), rng)
        trains.append(_select(part, rows))
        report.append({"path": entry.path, "records": available, "held_out": len(held[-1][0]) if held else 0,
                       "used": len(rows), "weight": round(len(rows) / available, 4)})
        note = f", {report[-1]['held_out']} held out for eval" if held else ""
        print(f"tunelab: mixture: {entry.path} {len(rows)} of {available} train records "
              f"(weight {report[-1]['weight']:g}{note})")
    # Shuffled, so that data.max_train_samples (and eval.max_samples on the eval side) cut every source alike.
    train = _shuffled(_concat(trains), rng)
    if d.max_train_samples is not None and len(train[0]) > d.max_train_samples:
        print(f"tunelab: mixture: data.max_train_samples={d.max_train_samples} keeps that many of the "
              f"{len(train[0])} mixed train records")
        train = _select(train, range(d.max_train_samples))
    return train, _shuffled(_concat(held), rng) if held else None, report


def _wanted(recipe: Recipe, i: int, entry: DataSource, available: int) -> int:
    if entry.count is not None:
        return entry.count
    weight = 1.0 if entry.weight is None else entry.weight
    wanted = round(weight * available)
    if wanted == 0:
        raise UserError(f"{recipe.origin(f'data.train[{i}].weight')}: data.train[{i}].weight = {weight:g} takes "
                        f"none of the {available} train records of {entry.path}; give a larger weight or a count")
    return wanted


def _take(available: int, wanted: int, rng: random.Random) -> list[int]:
    """`wanted` row numbers out of `available`: every row once per whole copy, then a sample for the rest."""
    copies, rest = divmod(wanted, available)
    return list(range(available)) * copies + sorted(rng.sample(range(available), rest))


def _select(part: Part, rows) -> Part:
    ds, where = part
    return ds.select(rows), [where[row] for row in rows]


def _shuffled(part: Part, rng: random.Random) -> Part:
    order = list(range(len(part[0])))
    rng.shuffle(order)
    return _select(part, order)


def _concat(parts: list[Part]) -> Part:
    return datasets.concatenate_datasets([ds for ds, _ in parts]), [w for _, where in parts for w in where]


def _check_columns(recipe: Recipe, parts: list[Part]) -> None:
    """Every source must end with the first one's columns and value types, or they cannot be trained together."""
    first = parts[0][0]
    for i, (ds, _) in enumerate(parts[1:], start=1):
        if ds.column_names != first.column_names:
            raise UserError(f"{recipe.origin(f'data.train[{i}]')}: data.train[{i}] ({recipe.data.train[i].path}) "
                            f"becomes the columns {', '.join(ds.column_names)}, but data.train[0] "
                            f"({recipe.data.train[0].path}) becomes {', '.join(first.column_names)}; every source must "
                            f"end in the same columns (messages, alpaca and sharegpt all become messages)")
        try:
            datasets.concatenate_datasets([first.select([0]), ds.select([0])])  # empty ones are not compared
        except ValueError:
            column = next((c for c in ds.column_names if ds.features[c] != first.features[c]), ds.column_names[0])
            raise UserError(f"{recipe.origin(f'data.train[{i}]')}: data.train[{i}] ({recipe.data.train[i].path}): "
                            f"its {column!r} holds {ds.features[column]}, but data.train[0]'s holds "
                            f"{first.features[column]} (e.g. text in one, message lists in the other); give every "
                            f"source the same shape") from None
