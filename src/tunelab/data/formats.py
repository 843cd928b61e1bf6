"""Record formats: check each record, then convert (with datasets.map) to the shapes TRL takes.

| format            | a record                                                         | becomes (TRL)            |
|-------------------|------------------------------------------------------------------|--------------------------|
| text              | {"text": "..."}                                                  | language modeling        |
| messages          | {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content"}]} | conversational    |
| alpaca            | {"instruction", "input", "output", "system", "history": [[user, assistant], ...]}; input, system, history optional | conversational |
| sharegpt          | {"conversations": [{"from": "human"|"gpt"|"system"|"observation"|"function_call", "value"}], "system" (optional)} | conversational |
| prompt_completion | {"prompt", "completion"}: strings or message lists               | prompt-completion        |
| preference        | {"prompt", "chosen", "rejected"}: strings or message lists       | preference               |
| unpaired_preference | {"prompt", "completion", "label"}: label true (a good reply) or false (KTO) | unpaired preference |
| prompt            | {"prompt", "answer"}: what to generate from; answer optional (GRPO, RLOO) | prompt-only      |
| classification    | {"text", "label"}: label a name or an id                          | sequence classification  |
| pair              | {"text", "text_pair", "label"}                                   | sequence-pair classification |
| tagging           | {"tokens": [...], "tags": [...]}, one tag per token (or .conll)  | token classification     |
| text2text         | {"source", "target"} (names set by data.source_field/target_field) | seq2seq                |
| image_chat        | {"messages", "image"}: a chat about one picture (a path relative to the data file) | vision-language |

alpaca and sharegpt are LLaMA-Factory's (and ms-swift's) shapes: alpaca's `history` turns come before the
instruction, sharegpt's `observation` is a tool's result (role "tool") and `function_call` the model's call
(role "assistant", its text kept as the content). A field a format does not read is named once per file
(`report_unused_fields`), so no data is left out without a word.
"""

from __future__ import annotations

import difflib
import reprlib
from collections import Counter

import datasets

from tunelab.data.labels import TAG_PREFIXES
from tunelab.data.readers import Records
from tunelab.errors import UserError

ROLES = ("system", "user", "assistant")
MESSAGES_ROLES = (*ROLES, "tool")  # the messages format also takes tool results
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "observation": "tool", "function_call": "assistant"}  # the last two: LLaMA-Factory's tool turns
REQUIRED = {
    "text": ("text",),
    "messages": ("messages",),
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired_preference": ("prompt", "completion", "label"),
    "prompt": ("prompt",),
    "classification": ("text", "label"),
    "pair": ("text", "text_pair", "label"),
    "tagging": ("tokens", "tags"),
    "text2text": ("source", "target"),
    "image_chat": ("messages", "image"),
}
# Every field a format reads (REQUIRED and the optional ones); text2text's after rename_text2text_fields.
FIELDS = {**REQUIRED, "alpaca": ("instruction", "input", "output", "system", "history"),
          "sharegpt": ("conversations", "system"), "prompt": ("prompt", "answer")}
# What each format looks like, to name the right one when a record has the wrong fields.
_SIGNATURES = {"tagging": "tokens", "classification": "label", "messages": "messages", "preference": "chosen"}
# How a CSV cell or a JSON value may say a KTO label.
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _empty(value) -> bool:
    """An optional field left out: null, a blank string (a CSV's empty cell) or an empty list."""
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _check_messages(messages, where: str, field: str, need_assistant: bool, roles: tuple[str, ...] = ROLES) -> None:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: field {field!r} should be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise UserError(f"{where}: {field}[{i}] should be an object with 'role' and 'content'")
        if m["role"] not in roles:
            raise UserError(f"{where}: {field}[{i}].role = {m['role']!r} should be one of {', '.join(roles)}")
        if not isinstance(m["content"], str):
            raise UserError(f"{where}: {field}[{i}].content should be a string")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: field {field!r} has no assistant message to learn from")


def _check_text_or_messages(row: dict, key: str, where: str) -> None:
    value = row[key]
    if isinstance(value, list):
        _check_messages(value, where, key, need_assistant=False)
    elif not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field {key!r} should be a non-empty string or a list of messages")


def check_implied_format(records: Records, fmt: str) -> None:
    """A built-in set or a CoNLL file says its own format; a different data.format is a mistake."""
    if records.implied_format and records.implied_format != fmt:
        kind = "built-in set" if records.source.startswith("builtin:") else "file"
        raise UserError(f"{records.source}: this {kind} is in the {records.implied_format!r} format, "
                        f"but data.format is {fmt!r}")


def check(records: Records, fmt: str, tag_scheme: str = "BIO") -> None:
    """Raise a UserError naming the first bad record's line and field."""
    check_implied_format(records, fmt)
    for i, row in enumerate(records.rows):
        where = records.where(i)
        missing = [k for k in REQUIRED[fmt] if row.get(k) is None]
        if missing:
            looks_like = next((f for f, key in _SIGNATURES.items() if key in row and f != fmt), None)
            hint = f"; it looks like {looks_like!r} data" if looks_like else ""
            raise UserError(f"{where}: record has no {missing[0]!r} field (format {fmt!r} needs "
                            f"{', '.join(REQUIRED[fmt])}; it has {', '.join(row) or 'nothing'}{hint})")
        if fmt == "text" and (not isinstance(row["text"], str) or not row["text"].strip()):
            raise UserError(f"{where}: field 'text' should be a non-empty string")
        elif fmt == "messages":
            _check_messages(row["messages"], where, "messages", need_assistant=True, roles=MESSAGES_ROLES)
        elif fmt == "alpaca":
            _check_alpaca(row, where)
        elif fmt == "sharegpt":
            _check_sharegpt(row, where)
        elif fmt in ("prompt_completion", "preference"):
            for key in REQUIRED[fmt]:
                _check_text_or_messages(row, key, where)
        elif fmt == "unpaired_preference":
            for key in ("prompt", "completion"):
                _check_text_or_messages(row, key, where)
            row["label"] = _kto_label(row["label"], where)
        elif fmt == "prompt":
            _check_text_or_messages(row, "prompt", where)
            if not _empty(row.get("answer")):
                row["answer"] = str(row["answer"]).strip()
        elif fmt in ("classification", "pair"):
            _check_labelled_text(row, fmt, where)
        elif fmt == "tagging":
            _check_tokens_and_tags(row, where, tag_scheme)
        elif fmt == "image_chat":
            _check_messages(row["messages"], where, "messages", need_assistant=True)
            if isinstance(row["image"], str) and not row["image"].strip():
                raise UserError(f"{where}: empty 'image' field (expected a path relative to the data file)")
        elif fmt == "text2text":
            for key in ("source", "target"):
                if not isinstance(row[key], str) or not row[key].strip():
                    raise UserError(f"{where}: field {key!r} should be a non-empty string")
    report_unused_fields(records, FIELDS[fmt])
    if fmt == "sharegpt":
        _report_two_systems(records)


def report_unused_fields(records: Records, used: tuple[str, ...]) -> None:
    """Print one line naming the fields of a user's file that are not in `used`, with how many records give each
    (a null or blank value gives nothing); nothing for a built-in set or a file with no such field."""
    if records.source.startswith("builtin:"):
        return
    counts = Counter(k for row in records.rows for k, v in row.items() if k not in used and not _empty(v))
    if not counts:
        return
    listed = []
    for key, n in counts.items():
        close = difflib.get_close_matches(str(key), used, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed.append(f"{key} ({n} record{'' if n == 1 else 's'}{hint})")
    print(f"tunelab: {records.source}: fields tunelab does not use: {', '.join(listed)}")


def _report_two_systems(records: Records) -> None:
    """A sharegpt record with a top-level system and a system turn first keeps the turn: say so, once per file."""
    both = sum(1 for row in records.rows if not _empty(row.get("system"))
               and row["conversations"][0].get("from") == "system")
    if both:
        print(f"tunelab: {records.source}: {both} record{'s' if both > 1 else ''} open with a system turn and also "
              f"have a top-level 'system': the turn is used, the field is not")


def _kto_label(value, where: str) -> bool:
    """True or false, as JSON writes it or as a CSV cell says it."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in _TRUE + _FALSE:
        return str(value).strip().lower() in _TRUE
    raise UserError(f"{where}: field 'label' = {value!r} should be true (a reply to learn from) or false "
                    f"(a reply to avoid)")


def _check_alpaca(row: dict, where: str) -> None:
    for key in ("instruction", "output"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise UserError(f"{where}: field {key!r} should be a non-empty string")
    if not _empty(row.get("system")) and not isinstance(row["system"], str):
        raise UserError(f"{where}: field 'system' should be a string, got {type(row['system']).__name__}")
    history = row.get("history")
    if _empty(history):
        return
    if not isinstance(history, list):
        raise UserError(f"{where}: field 'history' should be a list of [user, assistant] pairs, "
                        f"got {type(history).__name__}")
    for j, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(s, str) for s in pair):
            raise UserError(f"{where}: field 'history'[{j}] should be a [user, assistant] pair of strings, "
                            f"got {reprlib.repr(pair)}")


def _check_sharegpt(row: dict, where: str) -> None:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: field 'conversations' should be a non-empty list")
    for j, t in enumerate(turns):
        if not isinstance(t, dict) or t.get("from") not in SHAREGPT_ROLES or not isinstance(t.get("value"), str):
            raise UserError(f"{where}: conversations[{j}] should be {{'from': {'|'.join(SHAREGPT_ROLES)}, "
                            f"'value': str}}, got {reprlib.repr(t)}")
    if not any(SHAREGPT_ROLES[t["from"]] == "assistant" for t in turns):
        raise UserError(f"{where}: field 'conversations' has no gpt turn to learn from")
    if not _empty(row.get("system")) and not isinstance(row["system"], str):
        raise UserError(f"{where}: field 'system' should be a string, got {type(row['system']).__name__}")


def _check_labelled_text(row: dict, fmt: str, where: str) -> None:
    for key in ("text", "text_pair") if fmt == "pair" else ("text",):
        if not isinstance(row[key], str):
            raise UserError(f"{where}: field {key!r} should be a string, got {type(row[key]).__name__}")
        if not row[key].strip():
            raise UserError(f"{where}: field {key!r} is empty")
    if isinstance(row["label"], bool) or not isinstance(row["label"], (str, int)) or row["label"] == "":
        raise UserError(f"{where}: field 'label' should be a label name or an integer id, got {row['label']!r}")


def _check_tokens_and_tags(row: dict, where: str, scheme: str) -> None:
    tokens, tags = row["tokens"], row["tags"]
    for key, value in (("tokens", tokens), ("tags", tags)):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise UserError(f"{where}: field {key!r} should be a non-empty list of non-empty strings")
    if len(tokens) != len(tags):
        raise UserError(f"{where}: {len(tokens)} tokens but {len(tags)} tags (one tag per token)")
    prefixes = TAG_PREFIXES[scheme]
    for tag in tags:
        prefix, dash, kind = tag.partition("-")
        if tag != "O" and (not dash or prefix not in prefixes or not kind):
            raise UserError(f"{where}: tag {tag!r} does not fit the {scheme} tag scheme (expected O or "
                            f"{'/'.join(prefixes)}-TYPE, e.g. B-CITY; data.tag_scheme chooses the scheme)")


def _alpaca_to_messages(row: dict) -> dict:
    """system, then each history pair as a user and an assistant turn, then instruction (+ input) and output."""
    messages = [] if row["system"] is None else [{"role": "system", "content": row["system"]}]
    for user, assistant in row["history"] or []:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] is not None else "")
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}


def _sharegpt_to_messages(row: dict) -> dict:
    """The turns with their roles renamed; the top-level system first unless the turns start with one."""
    messages = [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]]
    if row["system"] is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": row["system"]})
    return {"messages": messages}


def _last_reply_as_completion(row: dict) -> dict:
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def to_dataset(records: Records, fmt: str, loss_on: str = "assistant") -> datasets.Dataset:
    """Checked records -> a Dataset in the shape TRL takes for this format and loss choice."""
    # Every row gets each field the format reads, and only those: from_list takes its columns from the
    # first row, and a left-out optional field becomes null ("" and [] too, so Arrow can type a column
    # that has them beside strings or lists). The fields left out were named by report_unused_fields.
    optional = set(FIELDS[fmt]) - set(REQUIRED[fmt])
    rows = [{k: None if k in optional and _empty(row.get(k)) else row.get(k) for k in FIELDS[fmt]}
            for row in records.rows]
    ds = datasets.Dataset.from_list(rows)
    keep = {"text": ["text"], "messages": ["messages"], "prompt_completion": ["prompt", "completion"],
            "preference": ["prompt", "chosen", "rejected"], "unpaired_preference": ["prompt", "completion", "label"],
            "prompt": ["prompt", "answer"],
            **{f: list(REQUIRED[f]) for f in ("classification", "pair", "tagging", "text2text")}}
    if fmt == "alpaca":
        ds, fmt = ds.map(_alpaca_to_messages, remove_columns=ds.column_names), "messages"
    elif fmt == "sharegpt":
        ds, fmt = ds.map(_sharegpt_to_messages, remove_columns=ds.column_names), "messages"
    if fmt == "messages" and loss_on == "last_assistant":
        ds, fmt = ds.map(_last_reply_as_completion, remove_columns=ds.column_names), "prompt_completion"
    return ds.select_columns(keep[fmt])


def prompt_and_reference(row: dict) -> tuple[str | list, str] | None:
    """What to generate from, and the reply to compare with, for exact-match accuracy (None for text)."""
    if "messages" in row:
        messages = row["messages"]
        if messages[-1]["role"] != "assistant":
            return None
        return messages[:-1], messages[-1]["content"]
    answer_key = "completion" if "completion" in row else "chosen" if "chosen" in row else None
    if answer_key is None:
        return None
    answer = row[answer_key]
    return row["prompt"], answer[-1]["content"] if isinstance(answer, list) else answer


def rename_text2text_fields(records: Records, source_field: str, target_field: str) -> None:
    """Rows with the recipe's field names become {"source", "target"}; a missing field names its line.
    The fields left out are reported here, under the names the user gave them."""
    for i, row in enumerate(records.rows):
        for field in (source_field, target_field):
            if row.get(field) is None:
                raise UserError(f"{records.where(i)}: record has no {field!r} field (data.source_field = "
                                f"{source_field!r}, data.target_field = {target_field!r}; it has {', '.join(row) or 'nothing'})")
    report_unused_fields(records, (source_field, target_field))
    records.rows[:] = [{"source": row[source_field], "target": row[target_field]} for row in records.rows]
