"""The KTO loss from scratch: preference tuning from single thumbs-up / thumbs-down labels, no pairs needed.

Paper: KTO: Model Alignment as Prospect Theoretic Optimization, https://arxiv.org/abs/2402.01306 (the loss L_KTO;
TRL cites it as equation 7)
TRL source: https://github.com/huggingface/trl/blob/main/trl/trainer/kto_trainer.py (KTOTrainer._compute_loss)

DPO compares a chosen and a rejected completion of the same prompt. KTO scores each completion alone against a
reference point z0: the implicit reward beta * log(pi(y) / pi_ref(y)) of a desirable completion should sit above
beta * z0, an undesirable one's below. z0 estimates how far the policy has drifted from the reference in general,
KL(pi || pi_ref), so a completion only counts as learned when it rose more than everything else did. The loss is
1 - sigmoid, which flattens out (like prospect theory's value function): an example already well on its side of
z0 stops pulling, so a few mislabelled examples cannot dominate. Inputs are sequence log-probs, one per example.
Shapes: B examples, D of them desirable, U undesirable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KTOOutput:
    loss: torch.Tensor  # () mean over all B examples
    kl: torch.Tensor  # () the reference point z0, detached
    chosen_rewards: torch.Tensor  # (D,) detached: for logging, not for gradients
    rejected_rewards: torch.Tensor  # (U,)


def kl_reference_point(kl_logps, ref_kl_logps):
    """z0 = max(0, mean log(pi / pi_ref)) over mismatched (prompt, completion) pairs; each input (B,), output ().

    Mismatched pairs (TRL shifts the completions by one within the dataset) are completions the policy was not
    trained to prefer for that prompt, so their log-ratio measures general drift, not learning of one example.
    Clamped: KL is never negative, a sample mean can be. Detached: z0 is a baseline, not something to optimize;
    the paper does not backpropagate through it either.
    """
    return (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)  # ()


def kto_loss(policy_logps, ref_logps, desirable, kl_logps, ref_kl_logps, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> KTOOutput:
    """w_d * (1 - sigmoid(beta * (logratio - z0))) for desirable examples, w_u * (1 - sigmoid(beta * (z0 - logratio)))
    for undesirable ones, averaged over the B examples; logratio = log pi - log pi_ref.

    policy_logps, ref_logps: (B,) sequence log-probs of each example's own completion. desirable: (B,) bool labels.
    kl_logps, ref_kl_logps: (B,) the same for the mismatched pairs that estimate z0.
    desirable_weight, undesirable_weight: lambda_D and lambda_U, to balance unequal numbers of the two kinds;
    the paper keeps lambda_D * D / (lambda_U * U) within [1, 4/3].
    """
    z0 = kl_reference_point(kl_logps, ref_kl_logps)  # ()
    logratios = policy_logps - ref_logps  # (B,)
    # Desirable examples want their log-ratio above z0, undesirable ones below: one sign flip covers both.
    above = torch.where(desirable, logratios - z0, z0 - logratios)  # (B,)
    weights = torch.where(desirable, desirable_weight, undesirable_weight)  # (B,)
    losses = weights * (1 - torch.sigmoid(beta * above))  # (B,)
    rewards = beta * logratios.detach()  # (B,)
    return KTOOutput(losses.mean(), z0, rewards[desirable], rewards[~desirable])
