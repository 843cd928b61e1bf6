"""Hand-worked numbers for the lab's alignment losses (src/tunelab/scratch): the reward model's Bradley-Terry loss,
GRPO's group advantages and clipped objective, and KTO. tests/test_parity.py checks the same code against TRL;
these are values a reader can check with a calculator."""

import math

import pytest
import torch

from tunelab.scratch.grpo import clipped_surrogate, grpo_loss, group_advantages, k3_kl
from tunelab.scratch.kto import kto_loss
from tunelab.scratch.reward import reward_loss

pytestmark = pytest.mark.unit


def test_reward_loss_by_hand():
    """Two pairs of rewards (chosen, rejected): (2, 0), ranked right, and (0, 1), ranked wrong.

    Pair 1: -ln sigmoid(2 - 0)  = ln(1 + e^-2) = 0.126928
    Pair 2: -ln sigmoid(0 - 1)  = ln(1 + e^1)  = 1.313262
    Mean: 0.720095. Accuracy 1/2; mean margin (2 + -1) / 2 = 0.5.

    Margins (1, 0): pair 1 must beat the rejected by 1 to be done, -ln sigmoid(2 - 0 - 1) = ln(1 + e^-1) = 0.313262.
    Centering 0.01: mean((2 + 0)^2, (0 + 1)^2) = 2.5, adds 0.025. Mean: (0.313262 + 1.313262) / 2 + 0.025 = 0.838262.
    """
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    assert reward_loss(chosen[:1], rejected[:1]).loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    out = reward_loss(chosen, rejected)
    assert out.loss.item() == pytest.approx(0.720095, abs=1e-6)
    assert out.accuracy.item() == 0.5 and out.margin.item() == 0.5
    shifted = reward_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0]), center_rewards_coefficient=0.01)
    assert shifted.loss.item() == pytest.approx(0.838262, abs=1e-6)
    # Only the gap counts: adding 5 to every reward changes nothing, which is why centering exists.
    assert reward_loss(chosen + 5, rejected + 5).loss.item() == pytest.approx(0.720095, abs=1e-6)


def test_grpo_by_hand():
    """One prompt, G = 4 completions, rewards [1, 0, 0, 1] (two right answers, two wrong).

    Advantages: mean 0.5; unbiased std = sqrt((4 * 0.5^2) / (4 - 1)) = sqrt(1/3) = 0.577350;
      a = 0.5 / (0.577350 + 1e-4) = 0.865875, so advantages [a, -a, -a, a] = [0.865875, -0.865875, ...].
      scale_rewards="none": [0.5, -0.5, -0.5, 0.5]. A group with equal rewards gets 0 / (0 + 1e-4) = 0.

    Clipped objective, eps = 0.2 (ratios clipped to [0.8, 1.2]); per-token loss = -min(ratio * A, clip(ratio) * A).
      Completion 0 (A = +a), tokens with ratio 1.5, 0.5, then padding:
        1.5: -min(1.5a, 1.2a) = -1.2a = -1.039051   (clipped: a good token gains nothing past 1.2)
        0.5: -min(0.5a, 0.8a) = -0.5a = -0.432938   (not clipped: the raw ratio is the pessimistic one)
      Completion 1 (A = -a), tokens with ratio 1.5, 0.5, 1.0:
        1.5: -min(-1.5a, -1.2a) = 1.5a = 1.298813   (not clipped: a bad token that rose is penalized in full)
        0.5: -min(-0.5a, -0.8a) = 0.8a = 0.692700   (clipped: a bad token is pushed down no further than 0.8)
        1.0: a = 0.865875
      Clipped tokens: 2 of 5.
      "dapo" (mean over the 5 tokens):       (-1.2 - 0.5 + 1.5 + 0.8 + 1) a / 5 = 0.32a = 0.277080
      "grpo" (mean per completion, then mean): (-1.7a / 2 + 3.3a / 3) / 2 = (-0.85a + 1.1a) / 2 = 0.125a = 0.108234

    k3 KL with d = log pi_ref - log pi: d = ln 2 gives e^d - d - 1 = 1 - ln 2 = 0.306853; d = -ln 2 gives
      0.5 + ln 2 - 1 = 0.193147; d = 0 gives 0.
    """
    a = 0.865875
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    adv = group_advantages(rewards, num_generations=4)
    torch.testing.assert_close(adv, torch.tensor([a, -a, -a, a]), atol=1e-6, rtol=0)
    torch.testing.assert_close(group_advantages(rewards, 4, scale_rewards="none"), torch.tensor([0.5, -0.5, -0.5, 0.5]))
    assert group_advantages(torch.full((4,), 0.7), 4).abs().max().item() == 0.0

    log = math.log
    logps = torch.tensor([[log(1.5), log(0.5), 0.0], [log(1.5), log(0.5), 0.0]])  # (2, 3); old log-probs are 0
    old_logps, mask = torch.zeros(2, 3), torch.tensor([[1, 1, 0], [1, 1, 1]])
    two = adv[:2]  # completions 0 and 1: A = +a, -a
    per_token, _ = clipped_surrogate(logps, old_logps, two, epsilon_low=0.2)
    expected = torch.tensor([[-1.039051, -0.432938, -a], [1.298813, 0.692700, a]])  # padding's -a is masked out
    torch.testing.assert_close(per_token, expected, atol=1e-5, rtol=0)
    dapo = grpo_loss(logps, old_logps, two, mask, epsilon_low=0.2)
    assert dapo.loss.item() == pytest.approx(0.277080, abs=1e-5) and dapo.clip_ratio.item() == pytest.approx(2 / 5)
    assert grpo_loss(logps, old_logps, two, mask, epsilon_low=0.2, loss_type="grpo").loss.item() == pytest.approx(
        0.108234, abs=1e-5)

    d = torch.tensor([log(2), -log(2), 0.0])
    torch.testing.assert_close(k3_kl(torch.zeros(3), d), torch.tensor([0.306853, 0.193147, 0.0]), atol=1e-6, rtol=0)


def test_kto_by_hand():
    """beta = 0.5, one desirable and one undesirable example, undesirable_weight 1.5.

    Desirable: log pi = -6, log pi_ref = -10, logratio 4. Undesirable: -12 vs -8, logratio -4.
    KL pairs: log pi - log pi_ref = [1, 3], so z0 = mean = 2 (positive: no clamp).
      desirable:   1 - sigmoid(0.5 * (4 - 2))        = 1 - sigmoid(1) = 0.268941
      undesirable: 1.5 * (1 - sigmoid(0.5 * (2 + 4))) = 1.5 * (1 - sigmoid(3)) = 1.5 * 0.047426 = 0.071139
      mean: (0.268941 + 0.071139) / 2 = 0.170040. Rewards: 0.5 * 4 = 2 and 0.5 * -4 = -2.
    """
    out = kto_loss(torch.tensor([-6.0, -12.0]), torch.tensor([-10.0, -8.0]), torch.tensor([True, False]),
                   torch.tensor([-4.0, -2.0]), torch.tensor([-5.0, -5.0]), beta=0.5, undesirable_weight=1.5)
    assert out.loss.item() == pytest.approx(0.170040, abs=1e-6)
    assert out.kl.item() == 2.0 and out.chosen_rewards.tolist() == [2.0] and out.rejected_rewards.tolist() == [-2.0]


def test_kto_moves_the_right_way():
    """A desirable completion the policy raised more has a lower loss; an undesirable one a higher loss.
    The gradient says the same: it raises desirable log-probs and lowers undesirable ones. A negative KL
    estimate is clamped to 0."""
    kl_logps, ref_kl_logps = torch.tensor([-5.0, -5.0]), torch.tensor([-5.5, -4.5])  # z0 = 0

    def loss(logratio, desirable):
        return kto_loss(torch.tensor([logratio]), torch.tensor([0.0]), torch.tensor([desirable]),
                        kl_logps[:1], ref_kl_logps[:1]).loss.item()

    assert loss(3.0, True) < loss(1.0, True)
    assert loss(3.0, False) > loss(1.0, False)

    policy = torch.tensor([-6.0, -7.0], requires_grad=True)
    kto_loss(policy, torch.tensor([-6.5, -6.5]), torch.tensor([True, False]), kl_logps, ref_kl_logps).loss.backward()
    assert policy.grad[0] < 0 < policy.grad[1]  # gradient descent raises the desirable, lowers the undesirable

    clamped = kto_loss(policy, torch.tensor([-6.5, -6.5]), torch.tensor([True, False]), torch.tensor([-9.0, -9.0]),
                       torch.tensor([-5.0, -5.0]))
    assert clamped.kl.item() == 0.0
