"""tunelab.scratch.losses against torch.nn.functional.cross_entropy on the same logits and targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.parity import Check
from tunelab.scratch import losses as scratch

V = 11


def _batch(B: int, T: int, n_ignored: int):
    logits = torch.randn(B, T, V) * 2  # spread out, so some tokens are confidently right and some wrong
    targets = torch.randint(0, V, (B, T))
    targets[0, :n_ignored] = -100  # a prompt, as the SFT collator masks it
    return logits, targets


def cross_entropy() -> float:
    torch.manual_seed(0)
    logits, targets = _batch(3, 6, n_ignored=4)
    expected = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
    return (scratch.cross_entropy(logits, targets) - expected).abs().item()


def perplexity() -> float:
    torch.manual_seed(0)
    # Unequal numbers of counted tokens, so a mean of per-batch means would differ from the per-token mean.
    batches = [_batch(2, 8, n_ignored=7), _batch(1, 3, n_ignored=0)]
    logits = torch.cat([lg.reshape(-1, V) for lg, _ in batches])
    targets = torch.cat([t.reshape(-1) for _, t in batches])
    expected = torch.exp(F.cross_entropy(logits, targets, ignore_index=-100))
    return (scratch.perplexity(batches) - expected).abs().item()


CHECKS = [
    Check("loss cross-entropy", "F.cross_entropy(ignore_index=-100)", cross_entropy, 1e-5),
    # Looser: exp() multiplies the mean NLL's float32 rounding (~1e-6 here) by the perplexity itself (~50).
    Check("loss perplexity", "exp(F.cross_entropy) over all tokens", perplexity, 1e-4),
]
