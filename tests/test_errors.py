"""Bad input: one line naming file/line/field, exit code 2, no traceback, no run directory left behind.

Most go through the CLI in this process (`cli`), which is much quicker than a child process per case;
test_existing_run_directory_is_refused runs the real `python -m tunelab`, as a user would."""

import json
from types import SimpleNamespace

import pytest

from conftest import RECIPES, run_cli, tunelab

pytestmark = pytest.mark.unit
SFT = str(RECIPES / "sft_lora.yaml")


def cli(capsys, *args) -> SimpleNamespace:
    code, out, err = run_cli(capsys, *args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def assert_user_error(result, pattern: str, out_dir=None):
    import re

    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.strip().splitlines() if l.startswith("tunelab: error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
    assert "Traceback" not in result.stderr
    if out_dir is not None:
        assert not out_dir.exists() and not out_dir.with_name(out_dir.name + ".partial").exists()


@pytest.mark.parametrize("overrides, pattern", [
    (["adapter.rank=8"], r"unknown key 'adapter\.rank' \(did you mean 'r'\?\)"),
    (["train.max_step=3"], r"unknown key 'train\.max_step' \(did you mean 'max_steps'\?\)"),
    (["adapter.r=eight"], r"adapter\.r = 'eight' should be an integer"),
    (["data.train=missing.jsonl"], r"missing\.jsonl: data file not found"),
    (["adapter.method=prefix", "model.quantization=nf4"], r"cannot train a 4-bit model"),
    (["data.format=preference"], r"data\.format = 'preference' does not fit causal_lm\.sft"),
])
def test_recipe_mistakes(capsys, tmp_path, overrides, pattern):
    out = tmp_path / "run"
    assert_user_error(cli(capsys, "train", SFT, "--output-dir", str(out), *overrides), pattern, out)


def test_data_mistakes(capsys, tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops}\n')
    assert_user_error(cli(capsys, "train", SFT, "--output-dir", str(out), f"data.train={bad}"),
                      r"bad\.jsonl:2: not valid JSON", out)
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text(json.dumps({"instruction": "x"}) + "\n")
    assert_user_error(cli(capsys, "train", SFT, "--output-dir", str(out), f"data.train={nofield}", "data.format=alpaca"),
                      r"nofield\.jsonl:1: record has no 'output' field", out)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_user_error(cli(capsys, "train", SFT, "--output-dir", str(out), f"data.train={empty}"),
                      r"empty\.jsonl: the data set is empty", out)


def test_method_that_does_not_fit_the_model(capsys, tmp_path):
    out = tmp_path / "run"
    pretrain = str(RECIPES / "pretrain_tiny.yaml")
    assert_user_error(cli(capsys, "train", pretrain, "--output-dir", str(out), "adapter.method=lora"),
                      r"model built from scratch .* use adapter\.method=full", out)
    assert_user_error(cli(capsys, "train", SFT, "--output-dir", str(out), "adapter.target_modules=[w_qkv]"),
                      r"qwen2 has no module named 'w_qkv'", out)


def test_existing_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = tunelab("train", SFT, "--output-dir", str(out), check=False)
    assert_user_error(result, r"run directory exists; pass --resume .* --overwrite")
    assert (out / "keep.txt").read_text() == "mine"


def test_generation_options_that_contradict(capsys, sft_run):
    assert_user_error(cli(capsys, "generate", str(sft_run), "--prompt", "hi", "--num-beams", "0"),
                      r"num_beams = 0 should be >= 1")
