"""The alignment stages (reward, grpo, rloo, kto, orpo, simpo): every shipped recipe trains two steps on the embedded
default and writes a run that `tunelab eval`, `compare` and (for a reward model) `predict` read; rewards given as a
built-in, a reward-model run and a user's function; bad rewards and bad records stop before anything is written."""

import json
import math

import pytest
from safetensors.torch import load_file

from conftest import RECIPES, assert_user_error, run_cli
from tunelab.cli import main

pytestmark = pytest.mark.recipe
STAGES = ["reward", "grpo", "rloo", "kto", "orpo", "simpo"]
TWO_STEPS = ["train.max_steps=2", "train.logging_steps=1", "eval.max_samples=4", "train.save_strategy=no"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignment")
    for stage in STAGES:
        assert main(["train", str(RECIPES / f"{stage}_lora.yaml"), "--output-dir", str(root / stage), *TWO_STEPS]) == 0
    return root


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_trains_its_adapter_and_scores_it(runs, stage):
    metrics = json.loads((runs / stage / "metrics.json").read_text())
    assert metrics["recipe"] == f"causal_lm.{stage}" and metrics["train"]["steps"] == 2
    assert math.isfinite(metrics["train"]["final_loss"])
    weights = load_file(runs / stage / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero: it trained
    expected = {"reward": {"accuracy", "margin"}, "grpo": {"accuracy", "reward", "reward/exact_answer"},
                "rloo": {"accuracy", "reward"}, "kto": {"perplexity", "rewards/chosen", "kl"},
                "orpo": {"perplexity", "rewards/accuracies", "log_odds_ratio"},
                "simpo": {"perplexity", "rewards/margins"}}[stage]
    assert expected <= set(metrics["eval"]), metrics["eval"]
    if stage == "reward":  # the score head is new, so it trains whole and is saved beside LoRA
        assert any("score" in k for k in weights)


def test_eval_and_compare_read_every_stage(runs, capsys):
    for stage in ("reward", "grpo", "kto"):
        code, out, _ = run_cli(capsys, "eval", str(runs / stage))
        assert code == 0 and ("accuracy" in out or "perplexity" in out), out
    code, out, _ = run_cli(capsys, "compare", *(str(runs / s) for s in STAGES), "--output", str(runs / "c.png"))
    assert code == 0 and all(s in out for s in STAGES), out


def test_a_reward_model_scores_replies(runs, capsys):
    code, out, _ = run_cli(capsys, "predict", str(runs / "reward"), "--text", "What is 2 plus 3?",
                           "--text-pair", "2 plus 3 is 5.", "--text", "What is 2 plus 3?", "--text-pair", "2 plus 3 is 6.")
    assert code == 0
    scores = [float(line.split("\t")[0]) for line in out.strip().splitlines()[-2:]]
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert_user_error(capsys, r"does not generate text; use `tunelab predict`", "generate", str(runs / "reward"),
                      "--prompt", "What is 2 plus 3?")


def test_grpo_takes_a_reward_model_run_and_a_users_function(runs, tmp_path, monkeypatch):
    """The RLHF shape: the policy is rewarded by the reward-model run, beside a function of the user's own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def short(completions, **kwargs):\n"
        "    return [1.0 if len(c[-1]['content']) < 30 else 0.0 for c in completions]\n")
    out = tmp_path / "rlhf"
    assert main(["train", str(RECIPES / "grpo_lora.yaml"), "--output-dir", str(out), *TWO_STEPS,
                 f"rewards=[{runs / 'reward'}, my_rewards:short]"]) == 0
    scores = json.loads((out / "metrics.json").read_text())["eval"]
    assert {"reward/reward", "reward/my_rewards:short", "reward"} <= set(scores), scores


def test_a_bad_reward_function_stops_before_the_run_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad_rewards.py").write_text("def one(completions, **kwargs):\n    return 1.0\n")
    out = tmp_path / "run"
    grpo = str(RECIPES / "grpo_lora.yaml")
    assert_user_error(capsys, r"rewards entry 'bad_rewards:one' returned 1.0; it should return a list of 2 numbers",
                      "train", grpo, "--output-dir", str(out), "rewards=[bad_rewards:one]")
    assert_user_error(capsys, r"cannot import module 'missing_module'", "train", grpo, "--output-dir", str(out),
                      "rewards=[missing_module:f]")
    assert_user_error(capsys, r"rewards are read by causal_lm.grpo and causal_lm.rloo only", "train",
                      str(RECIPES / "kto_lora.yaml"), "--output-dir", str(out), "rewards=[exact_answer]")
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_bad_alignment_records_name_their_line(tmp_path, capsys):
    kto = tmp_path / "kto.csv"
    kto.write_text("prompt,completion,label\nhi,hello,TRUE\nhey,go away,maybe\n", encoding="utf-8")
    assert_user_error(capsys, r"kto.csv:3: field 'label' = 'maybe' should be true", "validate",
                      str(RECIPES / "kto_lora.yaml"), f"data.train={kto}", f"data.eval={kto}")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 1 plus 1?", "answer": 2}\n{"question": "x"}\n', encoding="utf-8")
    assert_user_error(capsys, r"prompts.jsonl:2: record has no 'prompt' field", "validate",
                      str(RECIPES / "grpo_lora.yaml"), f"data.train={prompts}", f"data.eval={prompts}")
    assert_user_error(capsys, r"adapter.method=prompt does not fit causal_lm.grpo", "validate",
                      str(RECIPES / "grpo_lora.yaml"), "adapter.method=prompt")


@pytest.mark.unit
def test_exact_answer_checks_a_number_by_value_and_a_text_whole():
    from tunelab.rewards import exact_answer, format_reward

    replies = [[{"role": "assistant", "content": "3 plus 4 is 7."}], [{"role": "assistant", "content": "It is 7.0"}],
               "1 plus 3 is 4.", "0 plus 4 is 4."]
    assert exact_answer(replies[:2], answer=["7", "7"]) == [1.0, 1.0]
    # a text answer is the whole reply (case and end punctuation aside): a right sum with wrong operands fails
    assert exact_answer(replies[2:], answer=["0 plus 4 is 4.", "0 PLUS 4 IS 4"]) == [0.0, 1.0]
    assert exact_answer(replies[:1], answer=[None]) == [None]  # no answer, no score
    assert format_reward(["One sentence.", "two\nlines.", "no end"]) == [1.0, 0.0, 0.0]
