"""Cross-entropy and perplexity from scratch: the loss every language model is trained on, and the
number it is usually reported as.

torch source: https://github.com/pytorch/pytorch/blob/main/torch/nn/functional.py (cross_entropy)
Background: the negative log-likelihood of the next token, averaged over the tokens that count; perplexity
is exp of that average, "as unsure as a uniform choice among this many tokens".
Targets equal to -100 (HF's label for prompt and padding tokens) are skipped, as in torch and transformers.
Shapes: N tokens (any leading dimensions, flattened), V vocabulary size.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def log_softmax(logits):  # logits (..., V)
    # log(e^x_i / sum_j e^x_j) = x_i - log sum_j e^x_j. Subtracting the max first changes nothing in the result
    # but keeps every exponent <= 0, so e^x cannot overflow.
    shifted = logits - logits.max(dim=-1, keepdim=True).values  # (..., V)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # (..., V)


def nll_sum(logits, targets, ignore_index: int = IGNORE_INDEX):
    """Summed negative log-likelihood of the targets, and how many targets counted. logits (..., V), targets (...)."""
    logits, targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)  # (N, V), (N,)
    keep = targets != ignore_index  # (N,)
    logp = log_softmax(logits[keep])  # (n, V)
    picked = logp.gather(-1, targets[keep][:, None]).squeeze(-1)  # (n,): log p(target) at each kept token
    return -picked.sum(), keep.sum()


def cross_entropy(logits, targets, ignore_index: int = IGNORE_INDEX):
    """Mean negative log-likelihood over the targets that are not ignore_index."""
    total, count = nll_sum(logits, targets, ignore_index)
    return total / count


def perplexity(batches) -> torch.Tensor:
    """exp of the mean NLL per token over (logits, targets) batches. The mean is over tokens, not over batches:
    averaging per-batch means would let a batch of a few tokens count as much as a batch of many."""
    total, count = 0.0, 0
    for logits, targets in batches:
        batch_total, batch_count = nll_sum(logits, targets)
        total, count = total + batch_total, count + batch_count
    return torch.exp(total / count)
