"""tunelab.scratch.grpo against TRL's GRPOTrainer: the group advantages and the clipped loss, on the same numbers.

The loss: TRL computes it inside the trainer's `_compute_loss(model, inputs)`, so, as for DPO, we call that method
on a stand-in for the trainer (just the attributes it reads) with a model that returns the per-token log-probs we
choose; old and reference log-probs come in `inputs`, as TRL's generation step leaves them.

The advantages: TRL computes them in the middle of `_generate_and_score_completions` (trl/trainer/grpo_trainer.py,
lines 2759-2810 in TRL 1.16: from `unscorable_mask = ...` to `advantages = torch.nan_to_num(...)`), a method that
also generates the completions and calls the reward functions, so it cannot be run on its own. The check reads
exactly those lines from the installed TRL (inspect.getsource, cut at those two statements) and runs them on
rewards we choose; if a TRL upgrade moves or renames them, the check fails instead of comparing against a stale
copy. The hand-worked numbers are in tests/test_alignment_losses.py.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import textwrap
from collections import defaultdict
from types import SimpleNamespace

import torch
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import nanstd

from tunelab.parity import Check
from tunelab.parity.dpo import _LogProbsModel, _one_process
from tunelab.scratch.grpo import grpo_loss, group_advantages

G = 4  # completions per prompt
N, T = 3 * G, 5  # completions in the batch, completion tokens (some padding)
_FIRST_LINE = "unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)"
_LAST_LINE = "advantages = torch.nan_to_num(advantages, nan=0.0)"


@functools.cache
def _trl_advantage_code():
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    start = source.rindex("\n", 0, source.index(_FIRST_LINE)) + 1  # from the start of that line, for dedent
    end = source.index(_LAST_LINE) + len(_LAST_LINE)
    return compile(textwrap.dedent(source[start:end]), "trl GRPOTrainer._generate_and_score_completions", "exec")


def _trl_advantages(rewards, scale_rewards):
    """TRL's own lines, run on one reward function's rewards (N,) with weight 1."""
    trainer = SimpleNamespace(multi_objective_aggregation="sum_then_normalize", scale_rewards=scale_rewards,
                              reward_weights=torch.ones(1), reward_funcs=[None])
    scope = {"torch": torch, "nanstd": nanstd, "self": trainer, "rewards_per_func": rewards.unsqueeze(1),
             "num_generations": G, "device": torch.device("cpu")}
    exec(_trl_advantage_code(), scope)
    return scope["advantages"]


def _rewards():
    torch.manual_seed(0)
    # A right/wrong group, a group where every completion scored the same (std 0: eps keeps 0 / 0 away), a graded one.
    return torch.cat([torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.full((G,), 0.5), torch.randn(G)])  # (N,)


def advantages() -> float:
    rewards = _rewards()
    return max((group_advantages(rewards, G, scale_rewards=scale) - _trl_advantages(rewards, scale)).abs().max().item()
               for scale in ("group", "batch", "none"))


def _inputs():
    torch.manual_seed(0)
    logps = -torch.rand(N, T) * 3  # (N, T)
    old_logps = logps + torch.randn(N, T) * 0.3  # (N, T): a reused batch, so ratios spread past the clip range
    ref_logps = logps + torch.randn(N, T) * 0.2  # (N, T)
    lengths = torch.randint(1, T + 1, (N,))  # (N,)
    mask = (torch.arange(T) < lengths[:, None]).long()  # (N, T): a completion ends, padding follows
    return logps, old_logps, ref_logps, mask, group_advantages(torch.randn(N), G)


def _trl(logps, old_logps, ref_logps, mask, advantages, loss_type, beta, epsilon_low, epsilon_high):
    """TRL's GRPO loss and logged metrics for one batch: eval mode, one process, no gradient accumulation."""
    model = _LogProbsModel(logps).eval()
    trainer = SimpleNamespace(
        model=model, loss_type=loss_type, beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        accelerator=SimpleNamespace(autocast=contextlib.nullcontext, num_processes=1, is_main_process=True,
                                    gather=_one_process, gather_for_metrics=_one_process,
                                    reduce=lambda tensor, reduction: tensor),  # TRL's profiler reads is_main_process
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        top_entropy_quantile=1.0, aux_loss_enabled=False, off_policy_mask_threshold=None,
        importance_sampling_level="token", use_vllm=False, vllm_importance_sampling_correction=False,
        current_gradient_accumulation_steps=1, max_completion_length=T, _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)))
    trainer._get_per_token_logps_and_entropies = functools.partial(GRPOTrainer._get_per_token_logps_and_entropies,
                                                                   trainer)
    inputs = {"prompt_ids": torch.zeros(N, 1, dtype=torch.long), "prompt_mask": torch.ones(N, 1, dtype=torch.long),
              "completion_ids": torch.zeros(N, T, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old_logps, "ref_per_token_logps": ref_logps,
              "num_items_in_batch": mask.sum()}  # for "dapo": the generation batch's completion tokens
    loss = GRPOTrainer._compute_loss(trainer, model, inputs)
    return loss, trainer._metrics["eval"]


def _compare(loss_type, beta, epsilon_low, epsilon_high):
    logps, old_logps, ref_logps, mask, adv = _inputs()
    expected, logged = _trl(logps, old_logps, ref_logps, mask, adv, loss_type, beta, epsilon_low, epsilon_high)
    out = grpo_loss(logps, old_logps, adv, mask, epsilon_low, epsilon_high, beta, ref_logps, loss_type)
    return out, expected, logged


def loss_dapo_kl() -> float:
    out, expected, _ = _compare("dapo", beta=0.04, epsilon_low=0.2, epsilon_high=0.28)
    return (out.loss - expected).abs().item()


def loss_grpo() -> float:
    out, expected, _ = _compare("grpo", beta=0.0, epsilon_low=0.2, epsilon_high=0.2)
    return (out.loss - expected).abs().item()


def metrics() -> float:
    out, _, logged = _compare("dapo", beta=0.04, epsilon_low=0.2, epsilon_high=0.28)
    assert 0 < out.clip_ratio < 1, "the inputs should clip some tokens and not others"
    ours = torch.stack([out.clip_ratio, out.kl])
    theirs = torch.tensor([logged["clip_ratio/region_mean"][0], logged["kl"][0]])
    return (ours - theirs).abs().max().item()


CHECKS = [
    Check("grpo advantages (group, batch, none)", "trl GRPOTrainer._generate_and_score_completions lines",
          advantages, 1e-6),
    Check("grpo clipped loss dapo + kl", "trl GRPOTrainer._compute_loss (dapo, beta 0.04)", loss_dapo_kl, 1e-6),
    Check("grpo clipped loss grpo", "trl GRPOTrainer._compute_loss (grpo, beta 0)", loss_grpo, 1e-6),
    Check("grpo clip ratio and kl", "trl GRPOTrainer logged clip_ratio/region_mean, kl", metrics, 1e-6),
]
