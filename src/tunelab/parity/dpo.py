"""tunelab.scratch.dpo against TRL's own DPO loss: DPOTrainer._compute_loss, run on the same log-probs.

TRL computes the loss inside the trainer's `_compute_loss(model, inputs)`, with no standalone function to
call, so we call that method on a stand-in for the trainer: just the attributes the method reads, a model
that returns the per-token log-probs we choose (in the shape TRL's fused LM head returns them), and
reference log-probs passed as precomputed. Everything from the log-probs to the loss is TRL's code.

TRL 1.16's "sigmoid" loss ignores label_smoothing; the cDPO formula survives only in its "aot" loss, which
sorts the batch's margins first. With one pair per batch that sort is a no-op, so the label-smoothing
check runs TRL one pair at a time.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch
from torch import nn
from trl.trainer.dpo_trainer import DPOTrainer

from tunelab.parity import Check
from tunelab.scratch.dpo import dpo_loss

B, L = 4, 3  # pairs, completion tokens per sequence


class _LogProbsModel(nn.Module):
    """Stands in for the policy: TRL calls it and reads per-token log-probs of the labels from its output."""

    def __init__(self, per_token_logps):
        super().__init__()
        self.per_token_logps = per_token_logps  # (2B, L): chosen rows, then rejected rows, as TRL batches them

    def forward(self, input_ids, **kwargs):
        zeros = torch.zeros_like(self.per_token_logps)  # metrics-only outputs TRL logs but the loss never reads
        return SimpleNamespace(log_probs=self.per_token_logps, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool())


def _one_process(tensor):
    return tensor  # gathering across processes, when there is one, returns the tensor as it is


def _trl(per_token_logps, ref_chosen, ref_rejected, beta, loss_type, label_smoothing=0.0):
    """TRL's DPO loss and logged metrics for per-token policy log-probs (2B, L) and reference sums (B,)."""
    n, length = per_token_logps.shape
    model = _LogProbsModel(per_token_logps).eval()
    trainer = SimpleNamespace(
        model=model, accelerator=SimpleNamespace(device=torch.device("cpu"), gather=_one_process,
                                                 gather_for_metrics=_one_process),
        beta=beta, loss_types=[loss_type], loss_weights=[1.0], label_smoothing=label_smoothing,
        precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl", use_weighting=False,
        aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    completion_mask = torch.ones(n, length + 1, dtype=torch.long)
    completion_mask[:, 0] = 0  # one prompt token, then L completion tokens, whose log-probs the model returns
    inputs = {"input_ids": torch.zeros(n, length + 1, dtype=torch.long),
              "attention_mask": torch.ones_like(completion_mask), "completion_mask": completion_mask,
              "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["eval"]


def _inputs():
    torch.manual_seed(0)
    per_token_logps = -torch.rand(2 * B, L) * 3  # (2B, L), log-probs are <= 0
    ref_chosen, ref_rejected = (-torch.rand(2, B) * 9).unbind(0)  # (B,) each: sums over L tokens
    return per_token_logps, ref_chosen, ref_rejected


def _ours(per_token_logps, ref_chosen, ref_rejected, **kwargs):
    chosen, rejected = per_token_logps.sum(-1).chunk(2)  # (B,) each: a sequence's log-prob sums its tokens'
    return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, **kwargs)


def loss_sigmoid() -> float:
    inputs = _inputs()
    expected, _ = _trl(*inputs, beta=0.1, loss_type="sigmoid")
    return (_ours(*inputs, beta=0.1).loss - expected).abs().item()


def loss_label_smoothing() -> float:
    per_token_logps, ref_chosen, ref_rejected = _inputs()
    chosen_rows, rejected_rows = per_token_logps.chunk(2)
    expected = torch.stack([
        _trl(torch.stack([chosen_rows[i], rejected_rows[i]]), ref_chosen[i:i + 1], ref_rejected[i:i + 1],
             beta=0.5, loss_type="aot", label_smoothing=0.2)[0]
        for i in range(B)
    ]).mean()
    got = _ours(per_token_logps, ref_chosen, ref_rejected, beta=0.5, label_smoothing=0.2).loss
    return (got - expected).abs().item()


def rewards() -> float:
    inputs = _inputs()
    _, logged = _trl(*inputs, beta=0.1, loss_type="sigmoid")
    out = _ours(*inputs, beta=0.1)
    # TRL logs only batch means of the rewards, so the means are what can be compared.
    ours = torch.stack([out.chosen_rewards.mean(), out.rejected_rewards.mean(),
                        (out.chosen_rewards - out.rejected_rewards).mean()])
    theirs = torch.tensor([logged["rewards/chosen"][0], logged["rewards/rejected"][0], logged["rewards/margins"][0]])
    return (ours - theirs).abs().max().item()


CHECKS = [
    Check("dpo loss sigmoid", "trl DPOTrainer._compute_loss (sigmoid)", loss_sigmoid, 1e-6),
    Check("dpo loss label smoothing", "trl DPOTrainer._compute_loss (aot, 1 pair)", loss_label_smoothing, 1e-6),
    Check("dpo rewards", "trl DPOTrainer logged rewards/chosen, /rejected, /margins", rewards, 1e-6),
]
