"""Data as users have it: LLaMA-Factory / ms-swift alpaca and sharegpt fields, tool turns, and the
report of the fields tunelab does not read. No model needed."""

import json

import pytest

from tunelab.data import formats
from tunelab.data.readers import read_records
from tunelab.errors import UserError

pytestmark = pytest.mark.unit


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def convert(path, fmt, loss_on="assistant"):
    records = read_records(str(path))
    formats.check(records, fmt)
    return formats.to_dataset(records, fmt, loss_on).to_list()


def msg(role, content):
    return {"role": role, "content": content}


def test_alpaca_system_and_history_become_turns_in_order(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "plain", "output": "one"},  # first row without the optional fields: later rows keep theirs
        {"system": "S", "history": [["q1", "a1"], ["q2", "a2"]], "instruction": "q3", "input": "x", "output": "a3"},
        {"system": "", "history": [], "instruction": "你好", "input": None, "output": "您好"},
        {"system": None, "history": None, "instruction": "q", "input": "  ", "output": "a"},
    ])
    rows = convert(path, "alpaca")
    assert [r["messages"] for r in rows] == [
        [msg("user", "plain"), msg("assistant", "one")],
        [msg("system", "S"), msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2"), msg("assistant", "a2"),
         msg("user", "q3\n\nx"), msg("assistant", "a3")],
        [msg("user", "你好"), msg("assistant", "您好")],
        [msg("user", "q"), msg("assistant", "a")],
    ]


def test_alpaca_input_is_kept_when_the_first_record_has_none(tmp_path):
    """datasets.Dataset.from_list takes its columns from the first row; a later row's input must survive."""
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"},
                                              {"instruction": "Add", "input": "1 and 2", "output": "3"}])
    assert convert(path, "alpaca")[1]["messages"][0] == msg("user", "Add\n\n1 and 2")


def test_alpaca_history_with_last_assistant_loss_keeps_history_in_the_prompt(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"history": [["q1", "a1"]], "instruction": "q2", "output": "a2"}])
    row = convert(path, "alpaca", loss_on="last_assistant")[0]
    assert row["prompt"] == [msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2")]
    assert row["completion"] == [msg("assistant", "a2")]


def test_alpaca_csv_with_empty_optional_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("instruction,input,output,system,history\nq,,a,,\nq2,in,a2,Be brief.,\n", encoding="utf-8")
    rows = convert(path, "alpaca")
    assert rows[0]["messages"] == [msg("user", "q"), msg("assistant", "a")]
    assert rows[1]["messages"] == [msg("system", "Be brief."), msg("user", "q2\n\nin"), msg("assistant", "a2")]


@pytest.mark.parametrize("history, error", [
    ([["q1", "a1"], ["q2"]], r"a\.jsonl:2: field 'history'\[1\] should be a \[user, assistant\] pair of strings"),
    ([["q1", "a1", "extra"]], r"a\.jsonl:2: field 'history'\[0\] should be a \[user, assistant\] pair"),
    ([["q1", 2]], r"a\.jsonl:2: field 'history'\[0\] should be a \[user, assistant\] pair"),
    (["q1", "a1"], r"a\.jsonl:2: field 'history'\[0\] should be a \[user, assistant\] pair"),
    ({"q1": "a1"}, r"a\.jsonl:2: field 'history' should be a list of \[user, assistant\] pairs, got dict"),
    ("q1 a1", r"a\.jsonl:2: field 'history' should be a list of \[user, assistant\] pairs, got str"),
], ids=["short-pair", "long-pair", "not-a-string", "flat-list", "dict", "string"])
def test_bad_alpaca_history_names_line_and_field(tmp_path, history, error):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "ok", "output": "ok"},
                                              {"instruction": "q", "output": "a", "history": history}])
    with pytest.raises(UserError, match=error):
        formats.check(read_records(str(path)), "alpaca")


def test_bad_alpaca_system_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a", "system": ["S"]}])
    with pytest.raises(UserError, match=r"a\.jsonl:1: field 'system' should be a string, got list"):
        formats.check(read_records(str(path)), "alpaca")


def test_sharegpt_system_observation_and_function_call(tmp_path):
    call = '{"name": "weather", "arguments": {"city": "北京"}}'
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"system": "You can call tools.", "tools": "[]", "conversations": [
            {"from": "human", "value": "北京天气?"}, {"from": "function_call", "value": call},
            {"from": "observation", "value": '{"temp": 20}'}, {"from": "gpt", "value": "20度。"}]},
        {"system": "top-level", "conversations": [
            {"from": "system", "value": "in the turns"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ])
    rows = convert(path, "sharegpt")
    assert [r["messages"] for r in rows] == [
        [msg("user", "hi"), msg("assistant", "hello")],
        [msg("system", "You can call tools."), msg("user", "北京天气?"), msg("assistant", call),
         msg("tool", '{"temp": 20}'), msg("assistant", "20度。")],
        [msg("system", "in the turns"), msg("user", "q"), msg("assistant", "a")],
    ]


def test_sharegpt_bad_role_lists_the_allowed_ones(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "bot", "value": "x"}]}])
    with pytest.raises(UserError, match=r"s\.jsonl:1: conversations\[0\] should be \{'from': human\|user\|gpt\|"
                                        r"assistant\|system\|observation\|function_call, 'value': str\}"):
        formats.check(read_records(str(path)), "sharegpt")


def test_sharegpt_without_a_reply_or_with_a_bad_system_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "x"},
                                                                 {"from": "observation", "value": "y"}]}])
    with pytest.raises(UserError, match=r"s\.jsonl:1: field 'conversations' has no gpt turn"):
        formats.check(read_records(str(path)), "sharegpt")
    path = write_jsonl(tmp_path / "s.jsonl", [{"system": 3, "conversations": [{"from": "gpt", "value": "x"}]}])
    with pytest.raises(UserError, match=r"s\.jsonl:1: field 'system' should be a string, got int"):
        formats.check(read_records(str(path)), "sharegpt")


def test_messages_take_a_tool_role(tmp_path):
    messages = [msg("user", "weather?"), msg("assistant", "calling weather"), msg("tool", "20C"),
                msg("assistant", "It is 20C.")]
    path = write_jsonl(tmp_path / "m.jsonl", [{"messages": messages}])
    assert convert(path, "messages")[0]["messages"] == messages
    bad = write_jsonl(tmp_path / "b.jsonl", [{"messages": [msg("user", "q"), msg("function", "x"), msg("assistant", "a")]}])
    with pytest.raises(UserError, match=r"b\.jsonl:1: messages\[1\]\.role = 'function' should be one of "
                                        r"system, user, assistant, tool"):
        formats.check(read_records(str(bad)), "messages")
    bad = write_jsonl(tmp_path / "b.jsonl", [{"messages": [msg("user", "q"), {"role": "tool", "content": 3},
                                                           msg("assistant", "a")]}])
    with pytest.raises(UserError, match=r"b\.jsonl:1: messages\[1\]\.content should be a string"):
        formats.check(read_records(str(bad)), "messages")


def test_unused_fields_are_reported_once_per_file_with_counts(tmp_path, capsys):
    rows = [{"id": i, "instruction": "q", "output": "a"} for i in range(5)]
    rows[1]["tools"] = "[]"
    rows[3]["tools"] = "[]"
    rows[2]["histroy"] = [["q", "a"]]
    rows[4]["meta"] = None  # null: nothing left out
    rows[4]["system"] = "S"  # read by alpaca
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    formats.check(read_records(str(path)), "alpaca")
    out = capsys.readouterr().out
    assert out.splitlines() == [f"tunelab: {path}: fields tunelab does not use: id (5 records), tools (2 records), "
                                f"histroy (1 record; did you mean 'history'?)"]


def test_no_report_when_every_field_is_read_or_for_builtin_sets(tmp_path, capsys):
    path = write_jsonl(tmp_path / "s.jsonl", [{"system": "S", "conversations": [{"from": "gpt", "value": "x"}]}])
    formats.check(read_records(str(path)), "sharegpt")
    formats.check(read_records("builtin:sft_train"), "messages")
    assert capsys.readouterr().out == ""


def test_unused_fields_of_text2text_use_the_users_names(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", [{"en": "hi", "de": "hallo", "id": 1}, {"en": "yes", "de": "ja", "id": 2}])
    records = read_records(str(path))
    formats.rename_text2text_fields(records, "en", "de")
    formats.check(records, "text2text")
    assert capsys.readouterr().out.splitlines() == [f"tunelab: {path}: fields tunelab does not use: id (2 records)"]
    assert records.rows == [{"source": "hi", "target": "hallo"}, {"source": "yes", "target": "ja"}]


def test_loading_reports_each_file_once_and_converts(tmp_path, capsys):
    """Through loading.load_dataset, as a run reads its data: one line per file, the user's names for text2text."""
    from tunelab.config import DataConfig
    from tunelab.data.loading import load_dataset

    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "system": "S", "history": [["q1", "a1"]], "instruction": "q2",
                                                "input": "x", "output": "a2"}])
    ds = load_dataset(str(alpaca), DataConfig(format="alpaca"))
    assert ds[0]["messages"] == [msg("system", "S"), msg("user", "q1"), msg("assistant", "a1"),
                                 msg("user", "q2\n\nx"), msg("assistant", "a2")]
    pairs = write_jsonl(tmp_path / "t.jsonl", [{"en": "hi", "de": "hallo", "note": "x"}])
    ds = load_dataset(str(pairs), DataConfig(format="text2text", source_field="en", target_field="de"))
    assert ds.to_list() == [{"source": "hi", "target": "hallo"}]
    assert capsys.readouterr().out.splitlines() == [f"tunelab: {alpaca}: fields tunelab does not use: id (1 record)",
                                                    f"tunelab: {pairs}: fields tunelab does not use: note (1 record)"]
