"""Evaluation, generation and merging on a saved run."""

import json
import math

import pytest
import torch

from conftest import run_cli
from tunelab import checkpoints
from tunelab.families import causal_lm
from tunelab.evaluation.perplexity import loss_tokens, perplexity

pytestmark = pytest.mark.recipe


def test_perplexity_is_token_weighted_not_a_mean_of_batch_means(sft_run):
    model, tokenizer = causal_lm.load_run(sft_run)
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi."}]}
    long = {"messages": [{"role": "user", "content": "What is 2 plus 3?"},
                         {"role": "assistant", "content": "2 plus 3 is 5. 2 plus 3 is 5. 2 plus 3 is 5."}]}
    rows = [short, long, long]
    nll, count = 0.0, 0
    for row in rows:  # by hand, one record at a time
        ids, mask = loss_tokens(tokenizer, row, 512)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
        for pos in range(1, len(ids)):
            if mask[pos]:
                nll -= logp[pos - 1, ids[pos]].item()
                count += 1
    got = perplexity(model, tokenizer, rows, max_length=512, batch_size=2)  # batches of unequal token counts
    assert got["eval_tokens"] == count
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


# The CLI in this process (run_cli): a child process would spend most of each test importing torch.
def test_eval_with_baseline_records_both(sft_run, capsys):
    code, out, _ = run_cli(capsys, "eval", str(sft_run), "--baseline", "--max-samples", "6")
    assert code == 0 and "baseline" in out and "difference" in out
    metrics = json.loads((sft_run / "metrics.json").read_text())
    assert math.isfinite(metrics["baseline"]["perplexity"]) and "accuracy" in metrics["baseline"]
    # the adapter was trained on these replies' format; the base model never saw the chat template
    assert metrics["eval"]["perplexity"] < metrics["baseline"]["perplexity"]


def test_eval_on_another_file(sft_run, tmp_path, capsys):
    data = tmp_path / "more.jsonl"
    data.write_text(json.dumps({"prompt": "What is 1 plus 1?", "completion": " 1 plus 1 is 2."}) + "\n")
    assert run_cli(capsys, "eval", str(sft_run), "--data", str(data), "--format", "prompt_completion")[0] == 0
    metrics = json.loads((sft_run / "metrics.json").read_text())
    assert metrics["eval_data"][str(data)]["model"]["eval_tokens"] > 0


@pytest.mark.parametrize("options", [[], ["--num-beams", "3"], ["--do-sample", "--temperature", "0.7", "--top-p", "0.9"]])
def test_generate_prints_a_reply(sft_run, options, capsys):
    code, out, _ = run_cli(capsys, "generate", str(sft_run), "--prompt", "What is 2 plus 2?", "--max-new-tokens", "8",
                           *options)
    assert code == 0 and out.strip()


def test_chat_keeps_history(sft_run):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tunelab", "generate", str(sft_run), "--chat", "--max-new-tokens", "6"],
                            input="What is 1 plus 1?\nWhat is 2 plus 2?\n\n", capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.count("assistant:") == 2


def test_merged_model_matches_the_adapter_model(sft_run, tmp_path, capsys):
    out = tmp_path / "merged"
    assert run_cli(capsys, "merge", str(sft_run), str(out))[0] == 0
    adapter_model, tokenizer = causal_lm.load_run(sft_run)
    merged, _ = causal_lm.load_model(checkpoints.ModelConfig(name_or_path=str(out)))
    ids = tokenizer(["What is 3 plus 4?", "1 plus 1 is 2."], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = adapter_model(**ids).logits
        b = merged(**ids).logits
    # float32 merge of W + (alpha/r) B A: equal up to rounding
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@pytest.mark.unit
def test_a_run_pins_the_embedded_build_it_started_from(sft_run):
    """An adapter must never be loaded onto a default rebuilt from a changed pretrain recipe or data."""
    from tunelab.errors import UserError

    recorded = checkpoints.run_recipe(sft_run).model.name_or_path
    assert recorded == checkpoints.pinned(checkpoints.EMBEDDED_QWEN2) and recorded.startswith("embedded:tiny-qwen2@")
    assert checkpoints.resolve(recorded) == checkpoints.resolve(checkpoints.EMBEDDED_QWEN2)
    with pytest.raises(UserError, match=r"trained on an earlier build of embedded:tiny-qwen2"):
        checkpoints.resolve("embedded:tiny-qwen2@000000000000")
