"""Our scratch Qwen2 on a real LoRA SFT run: load_run merges the adapter, and our model, loaded from the
merged weights, must give the same logits. Then what the parity rows cannot see: how many rows generate's
prefill sends through the LM head, and which positions the labels loss scores."""

import pytest
import torch

from tunelab import parity
from tunelab.parity.qwen2 import run_dir_checks, tiny_hf_qwen2
from tunelab.scratch import qwen2
from tunelab.scratch.losses import cross_entropy


@pytest.mark.parity
def test_scratch_qwen2_matches_merged_lora_run(sft_run):
    assert (sft_run / "adapter").is_dir() and not (sft_run / "model").exists()  # a LoRA run: merge path
    checks = run_dir_checks(sft_run)
    for check in checks:
        result = parity.run(check)
        assert result.passed, f"{check.component} vs {check.reference}: {result.diff:.3e} ({check.tolerance})"


@pytest.fixture(scope="module")
def tiny_ours():
    return qwen2.Qwen2ForCausalLM.from_hf(tiny_hf_qwen2(seed=4))


@pytest.mark.unit
def test_generate_sends_one_row_per_sequence_through_the_head(tiny_ours):
    """A (2, 7) prompt and 3 new tokens: the head sees (2, C) each time, prefill included (it used to see all
    2 * 7 prompt rows), and the tokens are still the argmax of a full forward over the text so far."""
    seen = []
    hook = tiny_ours.lm_head.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    prompt = torch.randint(0, 96, (2, 7))
    try:
        ids = tiny_ours.generate(prompt, max_new_tokens=3)
    finally:
        hook.remove()
    assert seen == [(2, 32)] * 3
    with torch.no_grad():
        for t in range(7, 10):
            assert torch.equal(tiny_ours(ids[:, :t])[:, -1].argmax(-1), ids[:, t])


@pytest.mark.unit
def test_labels_loss_scores_the_next_token_only_where_labelled(tiny_ours):
    """One labelled token (position 4 of row 0): the loss is -log p(that token) under position 3's logits,
    and the logits are those of a call without labels."""
    input_ids = torch.randint(0, 96, (2, 6))
    labels = torch.full_like(input_ids, -100)
    labels[0, 4] = input_ids[0, 4]
    with torch.no_grad():
        logits, loss = tiny_ours(input_ids, labels=labels)
        plain = tiny_ours(input_ids)
    assert torch.equal(logits, plain)
    expected = -torch.log_softmax(plain[0, 3], dim=-1)[input_ids[0, 4]]
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    assert loss.item() == pytest.approx(cross_entropy(plain[:, :-1], labels[:, 1:]).item(), abs=1e-6)
