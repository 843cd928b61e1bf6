"""Bad input that used to end in a traceback or a nonsense run: text that is not UTF-8 (and Excel's BOM, which
is fine), trainer arguments the optimizer refuses, nothing to train, --resume of a finished run, and a recipe's
built-in eval set in another format. Each is one `tunelab: error:` line, exit code 2, nothing left behind."""

import json
import re
import shutil

import pytest

from conftest import RECIPES
from test_errors import assert_user_error, cli

pytestmark = pytest.mark.unit
SFT = str(RECIPES / "sft_lora.yaml")
QUICK = ["train.max_steps=2", "eval.max_samples=4"]
ALPACA = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("café", "naïve", "über", "smörgås")]


# ---------------------------------------------------------------- 1, 2: encodings

def test_latin1_jsonl_names_line_byte_and_fix(capsys, tmp_path):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"text": "tea"}\n{"text": "caf\xe9"}\n')
    assert_user_error(cli(capsys, "validate", SFT, f"data.train={bad}", "data.format=text", "data.eval=null"),
                      r"latin\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 14\); save it as UTF-8, e\.g\. "
                      r"iconv -f latin1 -t utf-8 \S*latin\.jsonl > \S*latin\.utf8\.jsonl")


@pytest.mark.parametrize("name, data, line, column", [
    ("x.csv", b"text,label\ntea,a\ncaf\xe9,b\n", 3, 4),
    ("x.conll", b"EU B-ORG\n\nPar\xeds B-LOC\n", 3, 4),
    ("x.json", b'[{"text": "tea"},\n {"text": "caf\xe9"}]\n', 2, 15),  # read whole: placed from the byte offset
    ("x.jsonl", b'\xef\xbb\xbf{"text": "caf\xc3\xa9"}\n{"text": "\xc3\xa9t\xe9"}\n', 2, 13),  # after a BOM, valid UTF-8
])
def test_not_utf8_in_every_text_format(tmp_path, name, data, line, column):
    from tunelab.data.readers import read_records
    from tunelab.errors import UserError

    path = tmp_path / name
    path.write_bytes(data)
    pattern = rf"^{re.escape(str(path))}:{line}: not UTF-8 text \(byte 0x[0-9a-f]{{2}} at column {column}\)"
    with pytest.raises(UserError, match=pattern + r".* iconv -f latin1 -t utf-8 "):
        read_records(str(path))


def test_utf16_is_named(tmp_path):
    from tunelab.data.readers import read_records
    from tunelab.errors import UserError

    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\ntea,a\n".encode("utf-16"))
    with pytest.raises(UserError, match=r"excel\.csv:1: UTF-16 text .* iconv -f utf-16 -t utf-8"):
        read_records(str(path))


@pytest.mark.parametrize("name, data, rows, lines", [
    ("x.jsonl", '{"text": "café"}\r\n\r\n{"text": "tea"}\r\n', [{"text": "café"}, {"text": "tea"}], [1, 3]),
    ("x.json", '[{"text": "café"}]', [{"text": "café"}], [None]),
    ("x.conll", "Paris B-LOC\r\n\r\nEU B-ORG\r\n", [{"tokens": ["Paris"], "tags": ["B-LOC"]},
                                                    {"tokens": ["EU"], "tags": ["B-ORG"]}], [1, 3]),
    ("x.csv", 'text,label\r\n"two\r\nlines",a\r\ncafé,b\r\n',
     [{"text": "two\r\nlines", "label": "a"}, {"text": "café", "label": "b"}], [3, 4]),
    ("mac.csv", "text,label\rtea,a\rcafé,b\r",  # classic Mac line endings
     [{"text": "tea", "label": "a"}, {"text": "café", "label": "b"}], [2, 3]),
])
def test_a_bom_is_dropped_and_line_endings_kept_as_before(tmp_path, name, data, rows, lines):
    from tunelab.data.readers import read_records

    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + data.encode("utf-8"))
    records = read_records(str(path))
    assert (records.rows, records.lines) == (rows, lines)


def test_excel_csv_with_a_bom_validates(capsys, tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; it used to become part of the first column's name."""
    data = tmp_path / "excel.csv"
    lines = ["instruction,input,output", *(f"{r['instruction']},,{r['output']}" for r in ALPACA)]
    data.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    result = cli(capsys, "validate", SFT, f"data.train={data}", "data.format=alpaca", "data.eval=null")
    assert "3 train / 1 eval records" in result.stdout, result.stdout


# ---------------------------------------------------------------- 3, 4: trainer arguments, before staging

def test_learning_rate_the_optimizer_refuses(capsys, tmp_path):
    recipe = tmp_path / "sft.yaml"
    text, n = re.subn(r"(?m)^  learning_rate: .*$", "  learning_rate: -1", (RECIPES / "sft_lora.yaml").read_text())
    assert n == 1
    recipe.write_text(text)
    line = text.splitlines().index("  learning_rate: -1") + 1
    out = tmp_path / "run"
    assert_user_error(cli(capsys, "train", str(recipe), "--output-dir", str(out), *QUICK),
                      rf"sft\.yaml:{line}: train\.learning_rate = -1: the optimizer \(AdamW\) refuses it: "
                      r"Invalid learning rate", out)


def test_the_key_to_blame_is_found_among_several(tmp_path):
    from tunelab.config import load_recipe
    from tunelab.errors import UserError
    from tunelab.families import causal_lm

    recipe = load_recipe(SFT, ["train.adam_beta2=1.5", "train.weight_decay=0.1"])
    with pytest.raises(UserError, match=r"^override 'train\.adam_beta2=1\.5': train\.adam_beta2 = 1\.5: the optimizer "
                                        r"\(AdamW\) refuses it: Invalid beta parameter at index 1"):
        causal_lm.build_args(recipe, "sft", tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("steps", [["train.max_steps=0", "train.num_train_epochs=0"],
                                   ["train.num_train_epochs=-1"]])
def test_nothing_to_train(capsys, tmp_path, steps):
    out = tmp_path / "run"
    assert_user_error(cli(capsys, "train", SFT, "--output-dir", str(out), "eval.max_samples=4", *steps),
                      r"override 'train\.num_train_epochs=-?[01]': nothing to train .* train\.max_steps to a number "
                      r"of optimizer steps > 0, or train\.num_train_epochs", out)


# ---------------------------------------------------------------- 5: --resume of a finished run

def _snapshot(run):
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))
            if p.is_file()}


def test_resume_of_a_finished_run_leaves_it_untouched(capsys, tmp_path, sft_run):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    before = _snapshot(run)
    assert "metrics.json" in before
    result = cli(capsys, "train", SFT, "--output-dir", str(run), "--resume", *QUICK)
    assert_user_error(result, rf"{re.escape(str(run))}: this run is complete .* nothing to resume; .*"
                              rf"model\.name_or_path={re.escape(str(run))} .*--overwrite")
    assert _snapshot(run) == before
    assert not run.with_name("run.partial").exists()


def test_resume_refuses_a_directory_that_is_not_an_interrupted_run(tmp_path):
    from tunelab import rundir
    from tunelab.errors import UserError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match=r"not an interrupted run .* nothing to resume"):
        rundir.check_free(out, resume=True, overwrite=False)
    rundir.partial_path(out).mkdir()  # a run started with --overwrite and interrupted: resume continues it
    rundir.check_free(out, resume=True, overwrite=False)
    rundir.check_free(tmp_path / "new", resume=True, overwrite=False)  # nothing there yet: a fresh start


# ---------------------------------------------------------------- 6: the recipe's eval set in another format

def test_builtin_eval_set_in_another_format_says_how_to_go_on(capsys, tmp_path):
    data = tmp_path / "my_alpaca.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ALPACA), encoding="utf-8")
    args = ["validate", SFT, f"data.train={data}", "data.format=alpaca"]
    assert_user_error(cli(capsys, *args),
                      r"builtin:sft_eval: this built-in set is in the 'messages' format, but data\.format is "
                      r"'alpaca'; it is data\.eval \(\S*sft_lora\.yaml:\d+\): give data\.eval=FILE in the 'alpaca' "
                      r"format, or data\.eval=null to hold out data\.eval_fraction")
    assert "3 train / 1 eval records" in cli(capsys, *args, "data.eval=null").stdout
