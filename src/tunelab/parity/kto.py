"""tunelab.scratch.kto against TRL's own KTO loss: KTOTrainer._compute_loss, run on the same log-probs.

TRL 1.16 has no standalone `kto_loss` (older TRL had KTOTrainer.kto_loss); the loss, the KL reference point and
the logged rewards all live in the trainer's `_compute_loss(model, inputs, return_outputs)`. So, as for DPO, we
call that method on a stand-in for the trainer: just the attributes it reads, a model that returns the per-token
log-probs we choose, and reference log-probs passed as precomputed. TRL runs the model twice, on the examples and
on the mismatched KL pairs; the stand-in tells them apart by their token ids (0 for examples, 1 for KL pairs).
Everything from the log-probs to the loss is TRL's code.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from types import SimpleNamespace

import torch
from torch import nn
from trl.trainer.kto_trainer import KTOTrainer

from tunelab.parity import Check
from tunelab.parity.dpo import _one_process
from tunelab.scratch.kto import kto_loss

B, L = 6, 3  # examples, completion tokens per sequence
_KL_TOKEN = 1  # the token id the KL pairs are made of; the examples' are 0


class _TwoBatchModel(nn.Module):
    """Stands in for the policy: per-token log-probs (B, L) of the examples or of the KL pairs, by the input ids."""

    def __init__(self, per_token_logps, kl_per_token_logps):
        super().__init__()
        self.per_token_logps, self.kl_per_token_logps = per_token_logps, kl_per_token_logps

    def forward(self, input_ids, **kwargs):
        logps = self.kl_per_token_logps if (input_ids == _KL_TOKEN).all() else self.per_token_logps  # (B, L)
        zeros = torch.zeros_like(logps)  # metrics-only outputs TRL logs but the loss never reads
        return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros)


def _trl(per_token_logps, kl_per_token_logps, ref_logps, ref_kl_logps, labels, beta, desirable_weight,
         undesirable_weight):
    """TRL's KTO loss and logged metrics; per-token policy log-probs (B, L), reference sums (B,), labels (B,)."""
    model = _TwoBatchModel(per_token_logps, kl_per_token_logps).eval()
    trainer = SimpleNamespace(
        model=model, accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=_one_process),
        loss_type="kto", beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        calculate_KL=True, precompute_ref_logps=True, aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    trainer._compute_kl_logps = functools.partial(KTOTrainer._compute_kl_logps, trainer)
    completion_mask = torch.ones(B, L + 1, dtype=torch.long)
    completion_mask[:, 0] = 0  # one prompt token, then L completion tokens, whose log-probs the model returns
    inputs = {"input_ids": torch.zeros(B, L + 1, dtype=torch.long), "attention_mask": torch.ones_like(completion_mask),
              "completion_mask": completion_mask, "KL_input_ids": torch.full((B, L + 1), _KL_TOKEN),
              "KL_attention_mask": torch.ones_like(completion_mask), "KL_completion_mask": completion_mask,
              "label": labels, "ref_logps": ref_logps, "ref_KL_logps": ref_kl_logps}
    loss = KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["eval"]


def _inputs(kl_shift):
    """kl_shift moves the KL pairs' policy log-probs, to make the batch's KL estimate positive or negative."""
    torch.manual_seed(0)
    per_token_logps = -torch.rand(B, L) * 3  # (B, L)
    kl_per_token_logps = -torch.rand(B, L) * 3 + kl_shift  # (B, L)
    ref_logps, ref_kl_logps = (-torch.rand(2, B) * 9).unbind(0)  # (B,) each: sums over L tokens
    labels = torch.tensor([True, False, True, True, False, True])  # (B,): unequal counts, as usual in KTO data
    return per_token_logps, kl_per_token_logps, ref_logps, ref_kl_logps, labels


def _compare(kl_shift, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    per_token_logps, kl_per_token_logps, ref_logps, ref_kl_logps, labels = inputs = _inputs(kl_shift)
    expected, logged = _trl(*inputs, beta, desirable_weight, undesirable_weight)
    out = kto_loss(per_token_logps.sum(-1), ref_logps, labels, kl_per_token_logps.sum(-1), ref_kl_logps, beta,
                   desirable_weight, undesirable_weight)  # a sequence's log-prob sums its tokens'
    return out, expected, logged


def loss() -> float:
    out, expected, _ = _compare(kl_shift=0.0)
    assert out.kl > 0, "the inputs should give a positive KL estimate"
    return (out.loss - expected).abs().item()


def loss_weighted_kl_clamped() -> float:
    out, expected, _ = _compare(kl_shift=-3.0, beta=0.5, desirable_weight=0.8, undesirable_weight=1.33)
    assert out.kl == 0, "the inputs should give a negative KL estimate, clamped to 0"
    return (out.loss - expected).abs().item()


def rewards() -> float:
    out, _, logged = _compare(kl_shift=0.0)
    # TRL logs only batch means of the rewards, so the means are what can be compared.
    ours = torch.stack([out.kl, out.chosen_rewards.mean(), out.rejected_rewards.mean()])
    theirs = torch.tensor([logged["kl"][0], logged["rewards/chosen"][0], logged["rewards/rejected"][0]])
    return (ours - theirs).abs().max().item()


CHECKS = [
    Check("kto loss", "trl KTOTrainer._compute_loss (kto)", loss, 1e-6),
    Check("kto loss weighted, kl clamped", "trl KTOTrainer._compute_loss (weights 0.8 / 1.33)",
          loss_weighted_kl_clamped, 1e-6),
    Check("kto kl and rewards", "trl KTOTrainer logged kl, rewards/chosen, /rejected", rewards, 1e-6),
]
