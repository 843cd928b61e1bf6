"""Read records from a local file, a built-in generator or the hub, keeping each record's line number.

JSONL and CSV are read here rather than with `datasets.load_dataset`, because a user's mistake must be
reported as `file:line`, which the datasets loaders do not tell. Parquet and JSON arrays have no line
numbers worth giving, so they use the datasets / json readers directly.

Text files are UTF-8, with or without a byte order mark (Excel writes one): `utf-8-sig`. They are decoded
one line at a time, so a byte that is not UTF-8 (a Latin-1 `é`, say) is reported at its line and column.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from tunelab.data import builtin
from tunelab.errors import UserError

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".conll")


@dataclass
class Records:
    """Rows as dicts, where they came from, and the line (or row) each one started on."""

    rows: list[dict]
    source: str
    lines: list[int | None]
    implied_format: str | None = None  # the format a built-in set or a CoNLL file is in

    def where(self, index: int) -> str:
        line = self.lines[index]
        return f"{self.source}:{line}" if line else f"{self.source} (record {index + 1})"


def _not_utf8(path: Path, line: int, raw: bytes, offset: int) -> UserError:
    """The report of a byte that is not UTF-8: `offset` bytes into `raw`, which is line `line` of `path`."""
    column = len(raw[:offset].decode("utf-8", errors="replace")) + 1
    fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return UserError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[offset]:02x} at column {column}); save it as "
                     f"UTF-8, e.g. iconv -f latin1 -t utf-8 {shlex.quote(str(path))} > {shlex.quote(str(fixed))} "
                     f"(if it is Latin-1; Windows-1252 is cp1252)")


def _check_not_utf16(path: Path, head: bytes) -> None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
        raise UserError(f"{path}:1: UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8, e.g. "
                        f"iconv -f utf-16 -t utf-8 {shlex.quote(str(path))} > {shlex.quote(str(fixed))}")


def _text_lines(path: Path):
    """(line number, text) of each line of a UTF-8 file, its ending kept, a leading BOM dropped.

    Lines are split as text mode with newline="" splits them (at \\n, \\r\\n or a lone \\r): the bytes
    go through latin-1, which maps each byte to one character and never fails, and each line is encoded
    back and decoded as UTF-8 on its own. No UTF-8 sequence contains the bytes of \\n or \\r, so a
    character is never cut in two."""
    with path.open("rb") as binary:
        _check_not_utf16(path, binary.peek(2)[:2])
        for number, line in enumerate(io.TextIOWrapper(binary, encoding="latin-1", newline=""), start=1):
            raw = line.encode("latin-1")
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, number, raw, e.start) from None


def _read_jsonl(path: Path) -> Records:
    rows, lines = [], []
    for number, text in _text_lines(path):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
        lines.append(number)
    return Records(rows, str(path), lines)


def _read_json(path: Path) -> Records:
    """A JSON array is read whole; a byte that is not UTF-8 is placed by counting the newlines before it."""
    data = path.read_bytes()
    _check_not_utf16(path, data[:2])
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start, line_end = data.rfind(b"\n", 0, e.start) + 1, data.find(b"\n", e.start)
        raw = data[line_start:line_end if line_end >= 0 else len(data)]
        raise _not_utf8(path, data.count(b"\n", 0, e.start) + 1, raw, e.start - line_start) from None
    del data
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a JSON array of objects (or JSONL, one object per line)")
    return Records(data, str(path), [None] * len(data))


def _read_csv(path: Path) -> Records:
    reader = csv.DictReader(text for _, text in _text_lines(path))
    rows, lines = [], []
    for row in reader:
        if None in row:  # csv puts the fields past the header's under the key None
            raise UserError(f"{path}:{reader.line_num}: more fields than the header has (quote a field that "
                            f"contains a comma)")
        rows.append(dict(row))
        lines.append(reader.line_num)
    return Records(rows, str(path), lines)


def _read_conll(path: Path) -> Records:
    """CoNLL layout: one `token ... tag` per line (first column the token, last the tag), a blank line
    between sentences, `-DOCSTART-` lines skipped. Each sentence becomes {"tokens", "tags"}."""
    rows, lines = [], []
    tokens, tags, start = [], [], None

    def flush():
        if tokens:
            rows.append({"tokens": list(tokens), "tags": list(tags)})
            lines.append(start)
            tokens.clear()
            tags.clear()

    for number, text in _text_lines(path):
        columns = text.split()
        if not columns or columns[0] == "-DOCSTART-":
            flush()
            continue
        if len(columns) < 2:
            raise UserError(f"{path}:{number}: expected a token and a tag separated by whitespace, got {text.strip()!r}")
        if not tokens:
            start = number
        tokens.append(columns[0])
        tags.append(columns[-1])
    flush()
    return Records(rows, str(path), lines, implied_format="tagging")


def _read_parquet(path: Path) -> Records:
    import datasets

    rows = datasets.Dataset.from_parquet(str(path)).to_list()
    return Records(rows, str(path), [None] * len(rows))


def _read_hub(name: str) -> Records:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise UserError(f"{name}: not a local file or builtin:NAME, and hub data sets need a network "
                        f"(HF_HUB_OFFLINE is set)")
    import datasets

    spec, _, split = name.partition(":")
    try:
        ds = datasets.load_dataset(spec, split=split or "train")
    except Exception as e:  # the hub client raises many types; all mean "could not get it"
        raise UserError(f"{name}: could not load the hub data set ({type(e).__name__}: {e})") from None
    return Records(ds.to_list(), name, [None] * len(ds))


def is_hub_data(spec: str) -> bool:
    return not spec.startswith("builtin:") and not _looks_local(spec)


def _looks_local(spec: str) -> bool:
    return Path(spec).suffix in LOCAL_SUFFIXES or Path(spec).exists() or spec.startswith((".", "/"))


def read_records(spec: str) -> Records:
    """`builtin:NAME`, a local file (by suffix), or `owner/name[:split]` on the hub."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in builtin.DATASETS:
            raise UserError(f"{spec}: unknown built-in data set (have: {', '.join(sorted(builtin.DATASETS))})")
        make, fmt = builtin.DATASETS[name]
        rows = make()
        return Records(rows, spec, [None] * len(rows), implied_format=fmt)
    path = Path(spec)
    if _looks_local(spec):
        if not path.is_file():
            raise UserError(f"{spec}: data file not found")
        reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet,
                  ".conll": _read_conll}.get(path.suffix)
        if reader is None:
            raise UserError(f"{spec}: unsupported file type {path.suffix!r} (use {', '.join(LOCAL_SUFFIXES)})")
        records = reader(path)
    else:
        records = _read_hub(spec)
    if not records.rows:
        raise UserError(f"{spec}: the data set is empty")
    return records
