"""Value normalisation: running return statistics, the critic regresses standardised returns, GAE sees
values in reward units."""

import sys
from pathlib import Path

import pytest
import torch

from codealign.train.config import PPOConfig
from codealign.train.models import ValueModel, make_reference
from codealign.train.ppo import PPO
from codealign.train.value_norm import RunningMoments

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import cpu_accelerator, rollout, tiny_lm  # noqa: E402


def test_running_moments_match_the_debiased_exponential_averages_by_hand():
    rm = RunningMoments(beta=0.5, min_var=1e-6)
    assert rm.moments() == (0.0, 1.0)  # identity before any data
    a = torch.tensor([[1.0, 3.0, 99.0]])
    rm.update(a, torch.tensor([[1.0, 1.0, 0.0]]))  # the masked 99 is ignored
    mean, std = rm.moments()
    assert float(mean) == pytest.approx(2.0) and float(std) == pytest.approx(1.0)  # the first batch exactly
    rm.update(torch.tensor([[6.0]]), torch.tensor([[1.0]]))
    # m = (0.5*0.5*2 + 0.5*6) / 0.75, sq = (0.5*0.5*5 + 0.5*36) / 0.75
    m, sq = (0.25 * 2 + 0.5 * 6) / 0.75, (0.25 * 5 + 0.5 * 36) / 0.75
    mean, std = rm.moments()
    assert float(mean) == pytest.approx(m) and float(std) == pytest.approx((sq - m * m) ** 0.5)
    x = torch.tensor([1.0, 7.0])
    assert torch.allclose(rm.denormalize(rm.normalize(x)), x)
    assert torch.allclose(rm.normalize(x), (x - m) / (sq - m * m) ** 0.5)


def test_equal_returns_do_not_blow_up_the_targets():
    rm = RunningMoments(min_var=1e-2)
    rm.update(torch.zeros(1, 5), torch.ones(1, 5))  # nothing passed: every return 0
    assert float(rm.moments()[1]) == pytest.approx(0.1) and torch.equal(rm.normalize(torch.zeros(3)), torch.zeros(3))


def make_ppo(value_norm: bool, **over):
    policy = tiny_lm()
    critic = ValueModel(policy, value_norm=RunningMoments() if value_norm else None)
    cfg = PPOConfig(**{"n_minibatches": 1, "micro_batch_size": 8, "value_clip": None, "value_norm": value_norm, **over})
    return PPO(policy, critic, make_reference(policy), cfg, pad_id=0, accelerator=cpu_accelerator())


ROLLOUTS = [rollout([3, 4, 5], [6, 7, 8, 1], 10.0)] * 3 + [rollout([3, 4, 5], [9, 10, 1], 0.0)] * 5


def test_the_critic_regresses_standardised_returns():
    # first step: the reference equals the policy (KL 0) and the critic outputs 0, so every token's return
    # is its sequence's score: 3 x 4 tokens of 10 and 5 x 3 tokens of 0
    returns = torch.tensor([10.0] * 12 + [0.0] * 15)
    z = (returns - returns.mean()) / returns.var(unbiased=False).sqrt()
    plain = make_ppo(False).step([None], lambda _: ROLLOUTS)
    normed_ppo = make_ppo(True)
    normed = normed_ppo.step([None], lambda _: ROLLOUTS)
    assert plain["value_loss"] == pytest.approx(0.5 * float((returns**2).mean()), rel=1e-4)
    assert normed["value_loss"] == pytest.approx(0.5 * float((z**2).mean()), rel=1e-4)  # = 0.5
    mean, std = normed_ppo.value_norm.moments()
    assert float(mean) == pytest.approx(float(returns.mean())) and float(std) == pytest.approx(float(returns.std(unbiased=False)))


def test_gae_sees_the_critic_outputs_in_reward_units():
    ppo = make_ppo(True, beta=0.0)
    rm = ppo.value_norm
    rm.update(torch.tensor([[2.0, 6.0]]), torch.ones(1, 2))  # mean 4, std 2
    with torch.no_grad():
        ppo.critic.head.bias.fill_(1.5)  # the critic says +1.5 std everywhere
    stats = ppo.step([None], lambda _: ROLLOUTS)
    assert stats["value_mean"] == pytest.approx(4.0 + 1.5 * 2.0)  # values handed to GAE, in reward units
    # with gamma = lambda = 1 and no KL, A = score - V on every token: |A| averaged over the 27 tokens
    expected = (12 * abs(10.0 - 7.0) + 15 * abs(0.0 - 7.0)) / 27
    assert stats["adv_abs_mean"] == pytest.approx(expected, rel=1e-5)
