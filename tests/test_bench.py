"""`tunelab bench`: a few steps of three variants on the tiny Qwen2, the table, bench.json and bench.png."""

import contextlib
import io
import json

import pytest
import torch

from conftest import RECIPES, assert_user_error

from tunelab.cli import main

pytestmark = pytest.mark.recipe
SFT = str(RECIPES / "sft_lora.yaml")


@pytest.mark.parametrize("recipe, argv, pattern", [
    ("sft_lora", ["--variants", "lora,turbo"], "unknown bench variant 'turbo'; choose from: trl-default, pad-longest"),
    ("sft_lora", ["--baseline", "chunked-loss"], "bench baseline 'chunked-loss' cannot run here: TRL .* already"),
    ("sft_lora", ["adapter.rank=8"], r"unknown key 'adapter\.rank'"),
    ("dpo_lora", [], "bench supports causal_lm sft recipes"),
    # found only once the variants' processes have loaded the model
    ("sft_lora", ["adapter.target_modules=[foo_proj]", "--variants", "lora"], "qwen2 has no module named 'foo_proj'"),
])
def test_bench_mistakes_are_one_line_exit_2(tmp_path, capsys, recipe, argv, pattern):
    assert_user_error(capsys, pattern, "bench", RECIPES / f"{recipe}.yaml", "--output-dir", tmp_path, *argv)
    assert not (tmp_path / "bench.json").exists()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One short bench of three variants serves every check below: its exit code, printed table, bench.json
    and output folder."""
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["bench", SFT, "--variants", "pad-longest,packed,bf16", "--steps", "2", "--output-dir", str(out)])
    return code, printed.getvalue(), json.loads((out / "bench.json").read_text()), out


def test_bench_table_has_the_trl_default_row_and_ratios(bench):
    code, table, report, out = bench
    assert code == 0, table
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["trl-default", "pad-longest", "packed"]  # the baseline is added, and comes first
    trl_line = next(line for line in table.splitlines() if line.startswith("trl-default"))
    assert "TRL" in trl_line and trl_line.rstrip().endswith("1.00")
    assert rows["trl-default"]["tokens_per_second_ratio"] == 1.0
    for row in rows.values():
        assert row["tokens_per_second"] > 0 and row["step_time_ms"] > 0 and row["peak_memory_mb"] > 0
        assert 0 <= row["padding_fraction"] <= 1
        assert row["final_loss"] == row["final_loss"]  # not NaN
        assert row["tokens_per_second_ratio"] == pytest.approx(
            row["tokens_per_second"] / rows["trl-default"]["tokens_per_second"])
    assert (out / "bench.png").stat().st_size > 0


def test_packing_removes_the_padding_that_pad_to_longest_has(bench):
    _, _, report, _ = bench
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["packed"]["padding_fraction"] < rows["pad-longest"]["padding_fraction"]
    assert rows["packed"]["settings"]["padding_free"] and not rows["pad-longest"]["settings"]["padding_free"]
    assert rows["pad-longest"]["settings"]["train_sampling_strategy"] == "random"
    # the TRL row ran with TRL's own defaults, not tunelab's
    assert rows["trl-default"]["settings"]["activation_checkpointing"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA-only variants run on a GPU")
def test_cuda_only_variants_are_skipped_with_the_reason(bench):
    _, table, report, _ = bench
    assert report["skipped"] == {"bf16": "needs CUDA"}
    assert "skipped bf16: needs CUDA" in table
