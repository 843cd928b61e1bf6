"""Seq2seq recipes on the embedded tiny T5: span-corruption pretraining builds it, every text2text recipe
trains a few steps and saves a loadable run, eval generates and scores ROUGE, and bad input is one line."""

import json
import re

import pytest
import torch

from conftest import REPO, run_cli
from tunelab.cli import main

T5 = REPO / "recipes" / "t5"
QUICK = ["train.max_steps=6", "train.logging_steps=1", "train.save_strategy=no", "data.max_train_samples=96",
         "eval.max_samples=16"]


def train(out, recipe: str, *overrides: str) -> dict:
    assert main(["train", str(T5 / f"{recipe}.yaml"), "--output-dir", str(out), *QUICK, *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def lora_run(t5_default, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5") / "summarize_lora"
    # A high learning rate: the quick default is barely pretrained, and the test has 60 steps to show a gain.
    train(out, "summarize_lora", "train.max_steps=60", "data.max_train_samples=960", "train.warmup_steps=0",
          "train.learning_rate=1e-2", "eval.max_samples=40")
    return out


@pytest.mark.recipe
def test_span_corruption_pretraining_builds_a_t5_with_sentinels(t5_default):
    from transformers import AutoTokenizer

    metrics = json.loads((t5_default / "metrics.json").read_text())
    assert metrics["train"]["final_loss"] < metrics["train"]["first_loss"]
    assert 0 < metrics["eval"]["denoising_loss"] < metrics["train"]["first_loss"]
    tokenizer = AutoTokenizer.from_pretrained(t5_default / "model")
    assert tokenizer.convert_tokens_to_ids("<extra_id_99>") != tokenizer.unk_token_id
    assert tokenizer("a report")["input_ids"][-1] == tokenizer.eos_token_id  # T5 ends every input with </s>


@pytest.mark.recipe
@pytest.mark.parametrize("recipe", ["summarize_prefix", "summarize_prompt", "summarize_full", "multitask_lora",
                                    "summarize_zh_lora"])
def test_recipe_trains_and_saves_a_loadable_run(t5_default, tmp_path, recipe):
    from tunelab.families.seq2seq import load_run

    out = tmp_path / recipe
    metrics = train(out, recipe)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert 0 <= metrics["eval"]["rougeL"] <= 1 and metrics["eval"]["generation"]["num_beams"] == 1
    if recipe == "multitask_lora":
        assert "rougeL" in metrics["eval"]["tasks"]["passive"]
    model, tokenizer = load_run(out)
    assert model.generate(**tokenizer(["summarize: a report"], return_tensors="pt"), max_new_tokens=3).shape[0] == 1


@pytest.mark.recipe
def test_lora_summarization_beats_the_base_model(capsys, lora_run):
    trained = json.loads((lora_run / "metrics.json").read_text())
    assert trained["train"]["final_loss"] < trained["train"]["first_loss"] * 0.7
    code, out, _ = run_cli(capsys, "eval", lora_run, "--baseline")
    assert code == 0 and "rougeL" in out
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["eval"]["samples"] == trained["eval"]["samples"]  # the reloaded adapter generates the same
    assert metrics["eval"]["rougeL"] > metrics["baseline"]["rougeL"] + 0.1
    assert metrics["eval"]["rouge_language"] == "en" and len(metrics["eval"]["samples"]) == 3


@pytest.mark.recipe
def test_generate_with_beam_search(capsys, lora_run):
    """The CLI's beam settings reach model.generate: its output equals a direct call with the same settings."""
    from tunelab.families.seq2seq import load_run

    report = "Sales at the Boston store rose from 120 to 150 units in March."
    code, out, _ = run_cli(capsys, "generate", lora_run, "--prompt", report, "--num-beams", "3",
                           "--no-repeat-ngram-size", "2", "--length-penalty", "0.5", "--max-new-tokens", "16")
    model, tokenizer = load_run(lora_run)
    direct = model.generate(**tokenizer(["summarize: " + report], return_tensors="pt"), num_beams=3,
                            no_repeat_ngram_size=2, length_penalty=0.5, max_new_tokens=16, do_sample=False)
    assert code == 0 and out.strip() == tokenizer.decode(direct[0], skip_special_tokens=True).strip()


@pytest.mark.unit
def test_rouge_in_chinese_is_scored_by_characters():
    from tunelab.evaluation.rouge import rouge

    scores = rouge(["西宁工厂五月产量升至384吨"], ["西宁工厂五月产量降至384吨"])
    assert scores["rouge_language"] == "zh" and 0.8 < scores["rougeL"] < 1


@pytest.mark.unit
def test_bad_seq2seq_input_is_one_line_and_exit_2(capsys, tmp_path):
    out = tmp_path / "run"
    recipe = T5 / "summarize_lora.yaml"

    def assert_user_error(pattern, *args):
        code, _, err = run_cli(capsys, *args)
        lines = [line for line in err.strip().splitlines() if line.startswith("tunelab: error:")]
        assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), err

    data = tmp_path / "reports.jsonl"
    data.write_text(json.dumps({"article": "Sales rose.", "headline": "Up"}) + "\n"
                    + json.dumps({"article": "Sales fell."}) + "\n")
    assert_user_error(r"reports\.jsonl:2: record has no 'headline' field", "train", recipe, "--output-dir", out,
                      f"data.train={data}", f"data.eval={data}", "data.source_field=article", "data.target_field=headline")
    assert_user_error(r"reports\.jsonl:1: record has no 'source' field", "train", recipe, "--output-dir", out,
                      f"data.train={data}")
    assert_user_error(r"'embedded:tiny-qwen2': qwen2 is decoder-only; this recipe needs the other kind \(use a causal_lm", "train",
                      T5 / "summarize_prefix.yaml", "--output-dir", out, "model.name_or_path=embedded:tiny-qwen2")
    assert_user_error(r"num_beams = 0 should be >= 1", "train", recipe, "--output-dir", out, "eval.generate.num_beams=0")
    assert_user_error(r"length_penalty = 2\.0 acts only in beam search", "train", recipe, "--output-dir", out,
                      "eval.generate.length_penalty=2.0")
    assert_user_error(r"data\.mix\[0\] has the same prefix as another task", "train", recipe, "--output-dir", out,
                      "data.mix=[{train: builtin:rewrites_train, prefix: 'summarize: '}]")
    assert_user_error(r"data\.mix\[0\]\.train = 5 should be str", "train", recipe, "--output-dir", out,
                      "data.mix=[{train: 5}]")
    assert_user_error(r"unknown key 'data\.mix\[0\]\.prefx' \(did you mean 'prefix'", "train", recipe,
                      "--output-dir", out, "data.mix=[{train: builtin:rewrites_train, prefx: 'p: '}]")
    assert not out.exists() and not out.with_name("run.partial").exists()


@pytest.mark.recipe
def test_long_targets_are_counted_and_truncated(t5_default, tmp_path):
    metrics = train(tmp_path / "short", "summarize_lora", "data.max_target_length=4", "train.max_steps=1")
    assert metrics["data"]["train_target_truncated"] == 96 and metrics["data"]["train_records"] == 96
