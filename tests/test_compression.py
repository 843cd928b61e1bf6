"""Compression: `causal_lm.distill` trains a student against a teacher's logits; `tunelab quantize` and `tunelab prune`
write runs that `tunelab eval`, `generate` and `compare` read; structured pruning equals zeroing the same units in
the original; bad input is one line, exit 2, and nothing written."""

import copy
import json
import math

import pytest
import torch
import transformers
from safetensors.torch import load_file

from conftest import RECIPES, assert_user_error, run_cli
from tunelab import checkpoints
from tunelab.compression import distill, prune, runs
from tunelab.families import causal_lm

pytestmark = pytest.mark.recipe
# The shipped recipe's student starts from the teacher's layers 0 and 3 here (copy), so that "it trained" is
# "it moved away from them".
TWO_STEPS = ["train.max_steps=2", "train.logging_steps=1", "eval.max_samples=4", "train.save_strategy=no",
             "train.student_init=copy"]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """The shipped tiny distillation recipe, two steps: a full run of a 2-layer student."""
    from tunelab.cli import main

    out = tmp_path_factory.mktemp("compression") / "distill"
    assert main(["train", str(RECIPES / "distill_full.yaml"), "--output-dir", str(out), *TWO_STEPS]) == 0
    return out


@pytest.fixture(autouse=True)
def quick_speed(monkeypatch):
    """Generation speed on one prompt of 4 tokens: the figure is written, its precision is not tested here."""
    monkeypatch.setattr(runs, "SPEED_PROMPTS", 1)
    monkeypatch.setattr(runs, "SPEED_TOKENS", 4)


# ---------------------------------------------------------------- distillation

@pytest.mark.unit
def test_soft_kl_hand_worked_and_equal_to_trl_gkd_at_beta_zero():
    from trl.experimental.gkd import GKDTrainer

    student, teacher = torch.tensor([[math.log(3), 0.0]]), torch.tensor([[0.0, 0.0]])
    assert distill.soft_kl(student, teacher, 1.0).item() == pytest.approx(0.143841, abs=1e-6)
    assert distill.soft_kl(student, teacher, 2.0).item() == pytest.approx(0.149009, abs=1e-6)
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, -100, 3, 4], [-100, -100, 5, 6, 7]])
    mask = labels != -100
    gkd = GKDTrainer.generalized_jsd_loss(s / 2.0, t / 2.0, labels=labels, beta=0.0)  # its mean over kept tokens
    ours = distill.soft_kl(s[mask], t[mask], 2.0) / mask.sum() / 2.0 ** 2
    torch.testing.assert_close(ours, gkd, rtol=1e-5, atol=1e-6)


@pytest.mark.unit
def test_kept_layers_are_evenly_spaced_first_and_last_kept():
    assert distill.kept_layers(4, 2) == [0, 3]
    assert distill.kept_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert distill.kept_layers(5, 1) == [0] and distill.kept_layers(4, 4) == [0, 1, 2, 3]


def test_distill_trains_the_student_and_records_the_teacher(distilled, capsys):
    assert run_cli(capsys, "eval", distilled, "--max-samples", "4")[0] == 0
    metrics = json.loads((distilled / "metrics.json").read_text())
    assert metrics["recipe"] == "causal_lm.distill" and metrics["train"]["steps"] == 2
    assert math.isfinite(metrics["train"]["final_loss"]) and math.isfinite(metrics["eval"]["perplexity"])
    assert metrics["teacher"]["name_or_path"].startswith("embedded:tiny-qwen2@")
    assert math.isfinite(metrics["teacher"]["eval"]["perplexity"])
    assert metrics["total_params"] < metrics["teacher"]["total_params"]  # 2 of the teacher's 4 layers
    student = load_file(distilled / "model" / "model.safetensors")
    teacher = load_file(checkpoints.build_embedded() / "model.safetensors")
    assert transformers.AutoConfig.from_pretrained(distilled / "model").num_hidden_layers == 2
    # the student started as the teacher's layers 0 and 3 (student_init copy) and trained away from them
    for student_layer, teacher_layer in ((0, 0), (1, 3)):
        key = "model.layers.{}.mlp.down_proj.weight"
        assert not torch.equal(student[key.format(student_layer)], teacher[key.format(teacher_layer)])


def test_the_teacher_term_is_the_kl_to_the_teachers_logits_and_alpha_zero_is_plain_sft(tmp_path):
    """The trainer's loss on one batch against the formula, by hand from both models' logits."""
    from datasets import Dataset

    teacher, tokenizer = causal_lm.load_model(causal_lm.ModelConfig(name_or_path="embedded:tiny-qwen2"))
    student = distill.make_student(copy.deepcopy(teacher), 2, "copy", "sdpa", "test")
    rows = [{"input_ids": tokenizer(t)["input_ids"], "assistant_masks": [0, 0] + [1] * 8}
            for t in ("What is 2 plus 3? 2 plus 3 is 5.", "Q: What is 1 plus 1?\nA: 1 plus 1 is 2.")]
    rows = [{k: v[:10] for k, v in r.items()} for r in rows]
    args = distill.DistillConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                                 activation_checkpointing=False, teacher_model_name_or_path="unused", alpha=0.5)
    trainer = distill.DistillationTrainer(model=student, args=args, train_dataset=Dataset.from_list(rows),
                                          processing_class=tokenizer, teacher_model=teacher)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    student.train()
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][scored]
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][scored]
        ce = torch.nn.functional.cross_entropy(s, targets[scored], reduction="sum")
        kl = distill.soft_kl(s, t, 2.0)
        n = scored.sum()
        got = trainer.compute_loss(student, batch)
        torch.testing.assert_close(got, (0.5 * ce + 0.5 * kl) / n, rtol=1e-4, atol=1e-5)
        trainer.args.alpha = 0.0
        torch.testing.assert_close(trainer.compute_loss(student, batch), ce / n, rtol=1e-4, atol=1e-5)
        trainer.args.alpha = 0.5
        for p in teacher.parameters():  # another teacher, another loss
            p.mul_(0.5)
        assert not torch.allclose(trainer.compute_loss(student, batch), got)


# ---------------------------------------------------------------- quantization

# Tolerances on the source's held-out perplexity: int8 and dynamic int8 keep 8 bits per weight (one scale per
# row), nf4 keeps 4 (one scale per block of 64): a larger change is allowed there.
TOLERANCE = {"int8": 0.02, "dynamic-int8": 0.05, "nf4": 0.15}


@pytest.mark.parametrize("method", ["int8", "nf4", "dynamic-int8"])
def test_quantize_writes_a_run_that_tunelab_eval_loads(distilled, tmp_path, capsys, method):
    out = tmp_path / method
    code, printed, err = run_cli(capsys, "quantize", distilled, out, "--method", method, "--max-samples", "4")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    c = metrics["compression"]
    assert c["method"] == method and c["source"] == str(distilled.resolve())
    if method == "dynamic-int8":  # float weights on disk, quantized on load
        assert c["after"]["weights_mb"] == pytest.approx(c["before"]["weights_mb"], rel=0.01)
        assert c["after"]["weights_in_memory_mb"] < c["before"]["weights_mb"] / 2
        model, _ = causal_lm.load_run(out)
        assert type(model.model.layers[0].mlp.up_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    else:
        assert c["after"]["weights_mb"] < c["before"]["weights_mb"] / 2
        config = json.loads((out / "model" / "config.json").read_text())
        assert config["quantization_config"]["load_in_8bit" if method == "int8" else "load_in_4bit"]
    code, printed, _ = run_cli(capsys, "eval", out, "--max-samples", "4")
    assert code == 0
    after = json.loads((out / "metrics.json").read_text())["eval"]["perplexity"]
    assert after == pytest.approx(c["before"]["eval"]["perplexity"], rel=TOLERANCE[method])


# ---------------------------------------------------------------- pruning

def test_prune_half_zeroes_half_of_every_linear_weight_and_eval_works(distilled, tmp_path, capsys):
    out = tmp_path / "p50"
    code, _, err = run_cli(capsys, "prune", distilled, out, "--sparsity", "0.5", "--max-samples", "4")
    assert code == 0, err
    weights = load_file(out / "model" / "model.safetensors")
    linear = {k: v for k, v in weights.items() if k.endswith("proj.weight")}
    assert len(linear) == 2 * 7
    for key, w in linear.items():
        assert (w == 0).sum().item() == round(0.5 * w.numel()), key  # each layer on its own, exactly
    assert (weights["model.embed_tokens.weight"] != 0).all()  # embeddings (tied to the LM head) stay dense
    assert run_cli(capsys, "eval", out, "--max-samples", "4")[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compression"]["after"]["zero_fraction"] == pytest.approx(0.5, abs=1e-3)
    assert math.isfinite(metrics["eval"]["perplexity"])


def test_a_lora_run_is_merged_then_pruned_and_generate_and_compare_read_it(sft_run, tmp_path, capsys):
    out = tmp_path / "lora-channels"
    code, _, err = run_cli(capsys, "prune", sft_run, out, "--sparsity", "0.25", "--structured", "channels",
                           "--max-samples", "2")
    assert code == 0, err
    config = transformers.AutoConfig.from_pretrained(out / "model")
    assert config.intermediate_size == 384 - 96
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total_params"] < metrics["compression"]["before"]["total_params"]
    code, printed, _ = run_cli(capsys, "generate", out, "--prompt", "What is 2 plus 2?", "--max-new-tokens", "6")
    assert code == 0 and printed.strip()
    code, printed, _ = run_cli(capsys, "compare", sft_run, out, "--output", tmp_path / "compare.png")
    assert code == 0 and "lora, channels 0.25" in printed


def _tiny_llama_style(seed=0):
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model("qwen2", vocab_size=97, hidden_size=48, intermediate_size=48,
                                               num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.unit
@pytest.mark.parametrize("unit, sparsity", [("heads", 0.34), ("channels", 0.5)])
def test_structured_pruning_equals_zeroing_the_same_units_and_loads_alone(tmp_path, unit, sparsity):
    model = _tiny_llama_style()
    smaller = prune.structured(model, sparsity, unit, "test")
    masked = copy.deepcopy(model)
    for big, small, layer in zip(model.model.layers, smaller.model.layers, masked.model.layers):
        if unit == "heads":  # a removed group's key rows are gone; zero its query heads' columns of o_proj
            kept = [g for g in range(3) if any(torch.equal(big.self_attn.k_proj.weight[8 * g:8 * g + 8], small_rows)
                                               for small_rows in small.self_attn.k_proj.weight.split(8))]
            assert len(kept) == 2
            for g in set(range(3)) - set(kept):
                layer.self_attn.o_proj.weight.data[:, 16 * g:16 * g + 16] = 0
        else:  # a removed channel's row of up_proj is gone; zero its column of down_proj
            kept_rows = {tuple(r.tolist()) for r in small.mlp.up_proj.weight}
            for c, row in enumerate(big.mlp.up_proj.weight):
                if tuple(row.tolist()) not in kept_rows:
                    layer.mlp.down_proj.weight.data[:, c] = 0
    config = smaller.config
    if unit == "heads":
        assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 8)
    else:
        assert config.intermediate_size == 24
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters())
    smaller.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # transformers alone
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        expected = masked(ids).logits
        torch.testing.assert_close(smaller(ids).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- bad input

def test_bad_input_is_one_line_exit_2_and_nothing_written(distilled, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert_user_error(capsys, r"not a finished run directory", "quantize", tmp_path / "missing", out,
                      "--method", "int8")
    for sparsity in ("1.0", "-0.1"):
        assert_user_error(capsys, r"--sparsity .*should be in \[0, 1\)", "prune", distilled, out,
                          "--sparsity", sparsity)
    assert_user_error(capsys, r"removes no key/value head of 2 per layer; the smallest step is 0\.5", "prune",
                      distilled, out, "--sparsity", "0.3", "--structured", "heads")
    from tunelab.compression import quantize

    monkeypatch.setattr(quantize, "unavailable", lambda method: "bitsandbytes is not installed (pip install bitsandbytes)")
    assert_user_error(capsys, r"--method nf4: not available on this machine: bitsandbytes is not installed",
                      "quantize", distilled, out, "--method", "nf4")
    assert not out.exists() and not (tmp_path / "out.partial").exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(capsys, r"out: exists; pass --overwrite", "prune", distilled, out, "--sparsity", "0.5")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert_user_error(capsys, r"train\.teacher_model_name_or_path = '/nowhere/teacher': no config\.json there",
                      "train", RECIPES / "distill_full.yaml", "--output-dir", tmp_path / "d",
                      "train.teacher_model_name_or_path=/nowhere/teacher", *TWO_STEPS)
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.partial").exists()
