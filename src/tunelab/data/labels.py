"""Label sets for the encoder formats (classification, pair, tagging), and the check that every eval label is known.

A run's labels come from its train data (or `data.labels`) and are stored in the run, so predictions
come back as names. Records are rewritten in place to carry label names, whether the file gave names or ids.
"""

from __future__ import annotations

from tunelab.config import DataConfig
from tunelab.data.readers import Records
from tunelab.errors import UserError

LABELLED = ("classification", "pair", "tagging")
TAG_PREFIXES = {"BIO": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


def entity_type(tag: str) -> str | None:
    return None if tag == "O" else tag.partition("-")[2]


def label_names(train: Records, d: DataConfig) -> list[str]:
    """Tagging: O, then every prefix of the scheme for each entity type in train. Classification: the
    given `data.labels`, else the sorted labels of train (ids without names are named by their number)."""
    if d.format == "tagging":
        types = sorted({entity_type(t) for row in train.rows for t in row["tags"]} - {None})
        return ["O"] + [f"{p}-{t}" for t in types for p in TAG_PREFIXES[d.tag_scheme]]
    if d.labels:
        return list(d.labels)
    values = {row["label"] for row in train.rows}
    return [str(v) for v in sorted(values, key=lambda v: (isinstance(v, str), v))]


def use_names(records: Records, fmt: str, names: list[str], given_ids: bool, known_from: str) -> None:
    """Check that each label is one of `names` and store it by name. `given_ids`: records may give
    a label as its index in `names` (data.labels was set)."""
    index = set(names)
    for i, row in enumerate(records.rows):
        if fmt == "tagging":
            unknown = [t for t in row["tags"] if t not in index]
            if unknown:
                raise UserError(f"{records.where(i)}: tag {unknown[0]!r} never occurs in {known_from} "
                                f"(entity types there: {', '.join(sorted({entity_type(n) for n in names} - {None}))})")
            continue
        value = row["label"]
        text = str(value)
        if text not in index and given_ids and text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
            text = names[int(text)]
        if text not in index:
            raise UserError(f"{records.where(i)}: label {value!r} never occurs in {known_from} "
                            f"(labels there: {', '.join(names)})")
        row["label"] = text
