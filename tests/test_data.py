"""Readers and formats: line-numbered errors, conversions with datasets.map, the built-in sets."""

import json

import pytest

from tunelab.data import builtin, formats
from tunelab.data.readers import read_records
from tunelab.errors import UserError

pytestmark = pytest.mark.unit


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken"\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: not valid JSON"):
        read_records(str(path))


def test_record_without_required_field_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    with pytest.raises(UserError, match=r"d\.jsonl:2: record has no 'output' field"):
        formats.check(read_records(str(path)), "alpaca")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(UserError, match="the data set is empty"):
        read_records(str(tmp_path / "e.jsonl"))
    with pytest.raises(UserError, match="data file not found"):
        read_records(str(tmp_path / "nope.jsonl"))


def test_csv_rows_keep_their_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nhi,there\n,empty\n")
    with pytest.raises(UserError, match=r"d\.csv:3: field 'prompt' should be a non-empty string"):
        formats.check(read_records(str(path)), "prompt_completion")


def test_parquet_and_json_arrays_are_read(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"text": "a b"}, {"text": "c"}]).to_parquet(str(tmp_path / "d.parquet"))
    (tmp_path / "d.json").write_text(json.dumps([{"text": "x"}]))
    assert len(read_records(str(tmp_path / "d.parquet")).rows) == 2
    assert read_records(str(tmp_path / "d.json")).rows == [{"text": "x"}]


def test_alpaca_and_sharegpt_become_messages(tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Add", "input": "1 and 2", "output": "3"}])
    ds = formats.to_dataset(read_records(str(alpaca)), "alpaca")
    assert ds[0]["messages"] == [{"role": "user", "content": "Add\n\n1 and 2"}, {"role": "assistant", "content": "3"}]
    share = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "system", "value": "Be kind."}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}])
    ds = formats.to_dataset(read_records(str(share)), "sharegpt")
    assert [m["role"] for m in ds[0]["messages"]] == ["system", "user", "assistant"]


def test_last_assistant_loss_becomes_prompt_completion():
    records = read_records("builtin:sft_train")
    ds = formats.to_dataset(records, "messages", loss_on="last_assistant")
    row = ds[0]
    assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"


def test_builtin_format_mismatch_is_an_error():
    with pytest.raises(UserError, match="built-in set is in the 'preference' format"):
        formats.check(read_records("builtin:preference_train"), "messages")


def test_builtin_sets_are_deterministic_and_eval_questions_are_held_out():
    assert builtin.corpus()[:5] == builtin.corpus()[:5]
    train_q = {r["messages"][-2]["content"] for r in builtin.sft("train")}
    eval_q = {r["messages"][-2]["content"] for r in builtin.sft("eval")}
    assert eval_q and not train_q & eval_q
    corpus_text = " ".join(d["text"] for d in builtin.corpus())
    # pretraining states the held-out facts: SFT only has to teach the format
    assert all(r["messages"][-1]["content"] in corpus_text for r in builtin.sft("eval"))


def test_preference_pairs_reject_a_plausible_mistake():
    for pair in builtin.preference("eval"):
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        a, b, c = (int(x) for x in chosen.removesuffix(".").replace(" plus ", " ").replace(" is ", " ").split())
        wrong = int(rejected.removesuffix(".").rsplit(" ", 1)[1])
        assert a + b == c and abs(wrong - c) == 1


def test_embedded_cache_is_named_by_its_recipe(tmp_path, monkeypatch):
    """Editing the pretrain recipe must not reuse a default built from the old one."""
    from tunelab import checkpoints

    before = checkpoints.embedded_run_dir()
    assert before == checkpoints.embedded_run_dir()  # deterministic
    edited = tmp_path / "pretrain_tiny.yaml"
    edited.write_text(checkpoints.EMBEDDED_RECIPES[checkpoints.EMBEDDED_QWEN2].read_text().replace("hidden_size: 128", "hidden_size: 96"))
    monkeypatch.setitem(checkpoints.EMBEDDED_RECIPES, checkpoints.EMBEDDED_QWEN2, edited)
    assert checkpoints.embedded_run_dir() != before
