"""`tunelab bench`: a few steps of several variants on the tiny Qwen2, the table, bench.json and bench.png."""

import contextlib
import io
import json
import math

import peft
import pytest
import torch
import transformers

from conftest import RECIPES, assert_user_error

from tunelab import precision
from tunelab.bench_processes import flops_per_token
from tunelab.cli import main

pytestmark = pytest.mark.recipe
SFT = str(RECIPES / "sft_lora.yaml")
BF16_CPU = torch.cuda.is_available() or precision.cpu_bf16_instructions() is not None


@pytest.mark.parametrize("recipe, argv, pattern", [
    ("sft_lora", ["--variants", "lora,turbo"],
     "unknown bench variant 'turbo'; choose from: trl-same-hparams, tunelab, trl-default, pad-longest"),
    ("sft_lora", ["--baseline", "chunked-loss"], "bench baseline 'chunked-loss' cannot run here: TRL .* already"),
    ("sft_lora", ["adapter.rank=8"], r"unknown key 'adapter\.rank'"),
    ("sft_lora", ["--variants", "packed", "lora:train.learning_rate=1e-3"],
     "'lora' is not one of the benched variants"),
    ("sft_lora", ["--variants", "trl-default", "trl-default:train.learning_rate=1e-3"],
     "trl-default trains with SFTConfig's own defaults"),
    ("sft_lora", ["--variants", "lora", "lora:adapter.rank=8"], r"unknown key 'adapter\.rank'"),
    ("dpo_lora", [], "bench supports causal_lm sft recipes"),
    # found only once the variants' processes have loaded the model
    ("sft_lora", ["adapter.target_modules=[foo_proj]", "--variants", "lora"], "qwen2 has no module named 'foo_proj'"),
])
def test_bench_mistakes_are_one_line_exit_2(tmp_path, capsys, recipe, argv, pattern):
    assert_user_error(capsys, pattern, "bench", RECIPES / f"{recipe}.yaml", "--output-dir", tmp_path, *argv)
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.unit
def test_flops_per_token_is_6n_for_full_and_4n_plus_2_trainable_with_lora():
    """One Qwen2 layer, hidden 8, 2 query heads and 1 key/value head of 4, MLP 16, vocabulary 64:
    q 8x8 = 64, k 8x4 = 32, v 8x4 = 32, o 8x8 = 64, gate, up and down 8x16 = 128 each: 576 in the layer;
    the LM head 8x64 = 512 (tied to the embedding, which as a lookup is not counted). N = 1088.
    Full fine-tuning: 6N = 6528.
    LoRA r=2 on q_proj (A 8x2 + B 2x8 = 32) and v_proj (A 8x2 + B 2x4 = 24): N_trainable = 56, N = 1144,
    4N + 2 N_trainable = 4576 + 112 = 4688."""
    config = transformers.Qwen2Config(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert flops_per_token(model) == {"matmul_params": 1088, "trainable_matmul_params": 1088, "flops_per_token": 6528}
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert flops_per_token(lora) == {"matmul_params": 1144, "trainable_matmul_params": 56, "flops_per_token": 4688}


def _bench(out, *argv) -> tuple[int, str, dict]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["bench", SFT, "--steps", "2", "--output-dir", str(out), *argv])
    return code, printed.getvalue(), json.loads((out / "bench.json").read_text())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One short bench of several variants, against the default baseline, with one variant's own learning
    rate, serves most checks below: its exit code, printed table, bench.json and output folder."""
    out = tmp_path_factory.mktemp("bench")
    code, table, report = _bench(out, "--variants", "pad-longest,packed,full,lora,fp32,bf16,sdpa",
                                 "lora:train.learning_rate=0.002")
    return code, table, report, out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The two rows the real-model check compares: plain TRL at the recipe's hyperparameters, and the recipe."""
    out = tmp_path_factory.mktemp("pair")
    return _bench(out, "--variants", "trl-same-hparams,tunelab", "--baseline", "trl-same-hparams")


def test_bench_table_has_the_baseline_row_and_ratios(bench):
    code, table, report, out = bench
    assert code == 0, table
    rows = {r["variant"]: r for r in report["rows"]}
    expected = ["trl-same-hparams", "pad-longest", "packed", "full", "lora", "fp32", *["bf16"] * BF16_CPU]
    assert list(rows) == expected  # the default baseline is added, and comes first
    trl_line = next(line for line in table.splitlines() if line.startswith("trl-same-hparams "))
    assert "TRL" in trl_line and trl_line.rstrip().endswith("1.00")
    assert rows["trl-same-hparams"]["tokens_per_second_ratio"] == 1.0
    for row in rows.values():
        assert row["tokens_per_second"] > 0 and row["step_time_ms"] > 0 and row["peak_memory_mb"] > 0
        assert 0 <= row["padding_fraction"] <= 1
        assert math.isfinite(row["final_loss"]) and math.isfinite(row["eval_loss"]) and row["eval_tokens"] > 0
        assert row["tokens_per_second_ratio"] == pytest.approx(
            row["tokens_per_second"] / rows["trl-same-hparams"]["tokens_per_second"])
    assert set(report["matmul_peak_gflops"]) == {"fp32", "bf16"}
    assert (out / "bench.png").stat().st_size > 0


def test_every_row_is_scored_on_the_same_eval_tokens(bench, pair):
    tokens = {r["eval_tokens"] for report in (bench[2], pair[2]) for r in report["rows"]}
    assert len(tokens) == 1


def test_packing_removes_the_padding_that_pad_to_longest_has(bench):
    _, _, report, _ = bench
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["packed"]["padding_fraction"] < rows["pad-longest"]["padding_fraction"]
    assert rows["packed"]["settings"]["padding_free"] and not rows["pad-longest"]["settings"]["padding_free"]
    assert rows["pad-longest"]["settings"]["train_sampling_strategy"] == "random"


def test_each_method_trains_at_its_own_learning_rate(bench):
    _, _, report, _ = bench
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["lora"]["settings"]["learning_rate"] == 0.002  # lora:train.learning_rate, that row only
    assert rows["full"]["settings"]["learning_rate"] == 1e-3  # sft_full.yaml, beside the benched recipe
    assert rows["full"]["learning_rate_from"].endswith("sft_full.yaml")
    for name in ("trl-same-hparams", "pad-longest", "packed", "fp32"):
        assert rows[name]["settings"]["learning_rate"] == 5e-3, name  # the recipe's
    # the nominal count: a full fine-tune costs 6 FLOPs per matmul weight and token, a frozen base 4 and a bit
    assert rows["full"]["flops_per_token"] == 6 * rows["full"]["matmul_params"]
    assert rows["lora"]["flops_per_token"] < 5 * rows["lora"]["matmul_params"]


@pytest.mark.skipif(not BF16_CPU, reason="needs CUDA or a CPU with bf16 instructions")
def test_fp32_and_bf16_rows_run_here(bench):
    _, table, report, _ = bench
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["fp32"]["settings"]["bf16"] is False and rows["fp32"]["precision"] == "fp32"
    assert rows["bf16"]["settings"]["bf16"] is True and rows["bf16"]["precision"] == "bf16"
    assert rows["bf16"]["peak_share"] == pytest.approx(
        rows["bf16"]["achieved_gflops"] / report["matmul_peak_gflops"]["bf16"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA-only variants run on a GPU")
def test_cuda_only_variants_are_skipped_with_the_reason(bench):
    _, table, report, _ = bench
    assert report["skipped"] == {"sdpa": "needs CUDA"}
    assert "skipped sdpa: needs CUDA" in table


def test_same_hparams_pair_runs_only_its_two_rows(pair):
    code, table, report = pair
    assert code == 0, table
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["trl-same-hparams", "tunelab"] and report["baseline"] == "trl-same-hparams"
    assert rows["trl-same-hparams"]["tokens_per_second_ratio"] == 1.0
    for row in rows.values():
        assert math.isfinite(row["eval_loss"]) and row["achieved_gflops"] > 0 and 0 < row["peak_share"] < 1.5
    trl, ours = rows["trl-same-hparams"]["settings"], rows["tunelab"]["settings"]
    # TRL's own defaults, but the recipe's learning rate, batch and length
    assert trl["trainer"] == "SFTTrainer" and trl["activation_checkpointing"] is True
    assert (trl["learning_rate"], trl["batch_size"], trl["max_length"]) == (5e-3, 16, 128)
    # the recipe as `tunelab train` runs it: the 0.8M tiny default trains in fp32 whatever the CPU
    assert ours["trainer"] == "SFTTrainerLabelPositions" and ours["activation_checkpointing"] is False
    assert ours["bf16"] is False and ours["train_sampling_strategy"] == "group_by_length"
    assert "tunelab: SFTTrainerLabelPositions" in table and "eval loss" in table.splitlines()[0]
