"""The advantage estimators against hand-computed values for small groups, their loss means, and one
real update of each on a tiny causal LM (no critic built for the critic-free ones)."""

import math
import sys
import typing
from pathlib import Path

import pytest
import torch

from codealign.train import advantages as A
from codealign.train import losses as L
from codealign.train.config import ALGO_DEFAULTS, PPO_FAMILY, PPOConfig, TrainConfig, build_config
from codealign.train.models import ValueModel, make_reference, pack, sequence_logprobs
from codealign.train.ppo import PPO

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import cpu_accelerator, rollout, tiny_lm  # noqa: E402

# two problems: group 0 has four samples (one passes), group 1 two samples (both fail)
SCORE = torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0, 0.0])
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1])
# response lengths 3, 1, 2, 1, 2, 3 (tokens in the log-prob layout)
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.float32)


def inputs(rewards=None, **over):
    if rewards is None:  # score on each sample's last token, no KL
        rewards = torch.zeros_like(MASK)
        for i, n in enumerate(MASK.sum(1).long().tolist()):
            rewards[i, n - 1] = SCORE[i]
    return A.AdvantageInputs(score=SCORE, rewards=rewards, mask=MASK, groups=GROUPS, **over)


def per_sample(adv):
    """Every valid token of a sample carries the sample's advantage: return it (and check so)."""
    out = []
    for row, m in zip(adv, MASK):
        values = row[m.bool()]
        assert torch.allclose(values, values[0].expand_as(values))
        assert torch.all(row[~m.bool()] == 0)
        out.append(float(values[0]))
    return out


def test_grpo_normalises_by_the_group_mean_and_sample_std():
    # group 0: mean 2.5; sample std sqrt((7.5^2 + 3 * 2.5^2) / 3) = 5 -> (1.5, -0.5, -0.5, -0.5); group 1: all equal -> 0
    adv, ret = A.ESTIMATORS["grpo"].compute(inputs())
    assert ret is None
    assert per_sample(adv) == pytest.approx([1.5, -0.5, -0.5, -0.5, 0.0, 0.0], abs=1e-5)


def test_drgrpo_subtracts_the_group_mean_only():
    adv, _ = A.ESTIMATORS["drgrpo"].compute(inputs())
    assert per_sample(adv) == pytest.approx([7.5, -2.5, -2.5, -2.5, 0.0, 0.0])


def test_rloo_baseline_is_the_mean_of_the_other_samples_with_kl_in_the_reward():
    # KL penalties on some tokens: sequence rewards R = 10 - 0.2, 0 - 0.3, 0, 0 - 0.6 | 0 - 0.1, 0
    rewards = torch.zeros_like(MASK)
    rewards[0] = torch.tensor([-0.1, -0.1, 10.0])
    rewards[1, 0] = -0.3
    rewards[3, 0] = -0.6
    rewards[4] = torch.tensor([-0.1, 0.0, 0.0])
    R = [9.8, -0.3, 0.0, -0.6, -0.1, 0.0]
    expected = [R[0] - (R[1] + R[2] + R[3]) / 3, R[1] - (R[0] + R[2] + R[3]) / 3, R[2] - (R[0] + R[1] + R[3]) / 3,
                R[3] - (R[0] + R[1] + R[2]) / 3, R[4] - R[5], R[5] - R[4]]
    adv, _ = A.ESTIMATORS["rloo"].compute(inputs(rewards))
    assert per_sample(adv) == pytest.approx(expected, abs=1e-5)


def test_rloo_gives_a_lone_sample_no_advantage():
    x = A.AdvantageInputs(score=torch.tensor([10.0]), rewards=torch.tensor([[10.0]]), mask=torch.ones(1, 1),
                          groups=torch.tensor([7]))
    adv, _ = A.ESTIMATORS["rloo"].compute(x)
    assert adv.tolist() == [[0.0]]


def test_reinforce_pp_whitens_returns_to_go_over_the_batch():
    rewards = torch.tensor([[-0.5, 2.0], [0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # returns to go (gamma 1): 1.5, 2.0 | 0.5; mean 4/3, population variance 7/18
    x = A.AdvantageInputs(score=torch.tensor([2.0, 0.5]), rewards=rewards, mask=mask, groups=torch.tensor([0, 1]))
    adv, _ = A.ESTIMATORS["reinforce++"].compute(x)
    std = math.sqrt(7 / 18)
    assert adv.flatten().tolist() == pytest.approx([(1.5 - 4 / 3) / std, (2.0 - 4 / 3) / std, (0.5 - 4 / 3) / std, 0.0], abs=1e-4)


def test_returns_to_go_discounts():
    rewards = torch.tensor([[1.0, 2.0, 4.0]])
    assert A.returns_to_go(rewards, torch.ones(1, 3), gamma=0.5).tolist() == [[1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0]]


def test_ppo_estimator_is_gae_on_the_shaped_rewards():
    torch.manual_seed(0)
    values = torch.randn_like(MASK)
    x = inputs(gamma=0.9, lam=0.8, values=values)
    adv, ret = A.ESTIMATORS["ppo"].compute(x)
    ref_adv, ref_ret = L.gae(x.rewards, values * MASK, MASK, 0.9, 0.8)
    assert torch.equal(adv, ref_adv) and torch.equal(ret, ref_ret)


def test_loss_means_token_sequence_and_constant():
    """sum(loss * weight) / sum(denominator) for a per-token loss of 1 everywhere on lengths 3 and 1."""
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])  # 9 = padding, must not count
    mean = lambda kind: float((loss * A.loss_weights(kind, mask, 8)[0]).sum() / A.loss_weights(kind, mask, 8)[1].sum())  # noqa: E731
    assert mean("token") == pytest.approx((1 + 2 + 3 + 4) / 4)  # PPO: every token counts once
    assert mean("sequence") == pytest.approx(((1 + 2 + 3) / 3 + 4 / 1) / 2)  # GRPO: mean of sequence means
    assert mean("constant") == pytest.approx((1 + 2 + 3 + 4) / (2 * 8))  # Dr.GRPO: no length normalisation
    # Dr.GRPO weighs every token alike whatever its sequence's length; GRPO favours short sequences' tokens
    w_const, w_seq = A.loss_weights("constant", mask, 8)[0], A.loss_weights("sequence", mask, 8)[0]
    assert w_const[0, 0] == w_const[1, 0] and w_seq[1, 0] == 3 * w_seq[0, 0]


def test_registry_config_and_cli_name_the_same_algorithms():
    assert set(A.ESTIMATORS) == set(PPO_FAMILY)
    assert set(typing.get_args(TrainConfig.model_fields["algo"].annotation)) == set(PPO_FAMILY) | {"dpo"}
    assert set(ALGO_DEFAULTS) == set(PPO_FAMILY) | {"dpo"}
    assert [a for a in PPO_FAMILY if A.ESTIMATORS[a].needs_critic] == ["ppo"]


def test_per_algorithm_defaults_and_an_explicit_value_wins():
    grpo = build_config(algo="grpo")
    assert (grpo.ppo.beta, grpo.ppo.kl_estimator) == (0.04, "k3")  # DeepSeekMath
    assert build_config(algo="drgrpo").ppo.beta == 0.0 and build_config(algo="rloo").ppo.beta == 0.05
    assert build_config(algo="reinforce++").ppo.beta == 0.01 and build_config().ppo.beta == 0.1
    assert build_config(None, ["ppo.beta=0.2"], algo="grpo").ppo.beta == 0.2
    assert build_config(None, ["ppo.beta=0.2"], algo="grpo").ppo.kl_estimator == "k3"


# -- one real update per algorithm ----------------------------------------------------------------------

PROMPT = [3, 4, 5]
GOOD = [6, 7, 8, 1]
BAD = [9, 10, 11, 1]


def batch():
    """Two problems: p0 half good, half bad; p1 all bad (no signal for group estimators)."""
    return ([rollout(PROMPT, GOOD, 10.0, pid="p0") for _ in range(4)] + [rollout(PROMPT, BAD, 0.0, pid="p0") for _ in range(4)]
            + [rollout([3, 5], BAD, 0.0, pid="p1") for _ in range(4)])


def make(algo, **over):
    policy = tiny_lm()
    critic = ValueModel(policy) if A.ESTIMATORS[algo].needs_critic else None
    cfg = PPOConfig(**{"actor_lr": 3e-3, "critic_lr": 1e-2, "n_minibatches": 1, **build_config(algo=algo).ppo.model_dump(include={"beta", "kl_estimator"}), **over})
    return PPO(policy, critic, make_reference(policy), cfg, pad_id=0, accelerator=cpu_accelerator(), algo=algo, max_new_tokens=8)


def margin(model):
    with torch.no_grad():
        lp = sequence_logprobs(model, pack([PROMPT, PROMPT], [GOOD, BAD], 0))
    return float(lp[0] - lp[1])


@pytest.mark.parametrize("algo", PPO_FAMILY)
def test_every_algorithm_raises_the_passing_program_and_only_ppo_has_a_critic(algo):
    ppo = make(algo)
    assert (ppo.critic is None) == (algo != "ppo")
    before = margin(ppo.unwrapped_policy)
    for _ in range(5):
        stats = ppo.step([None], lambda _: batch())
    assert margin(ppo.unwrapped_policy) > before + 0.5, algo
    assert ("value_loss" in stats) == (algo == "ppo") and ("kl_loss" in stats) == (algo in ("grpo", "drgrpo"))
    critic_parts = {"critic", "critic_opt"} if algo == "ppo" else set()
    assert set(ppo.state_dict()) == {"policy", "ref", "actor_opt"} | critic_parts


def test_a_critic_where_none_is_needed_is_refused():
    policy = tiny_lm()
    with pytest.raises(ValueError, match="takes no critic"):
        PPO(policy, ValueModel(policy), make_reference(policy), PPOConfig(), 0, cpu_accelerator(), algo="grpo")
    with pytest.raises(ValueError, match="needs"):
        PPO(policy, None, make_reference(policy), PPOConfig(), 0, cpu_accelerator(), algo="ppo")


def test_grpo_kl_term_in_the_loss_holds_the_policy_near_the_reference():
    moved = {}
    for beta in (0.0, 50.0):
        ppo = make("grpo", beta=beta, ema_reference=False)
        for _ in range(5):
            stats = ppo.step([None], lambda _: batch())
        moved[beta] = abs(margin(ppo.unwrapped_policy) - margin(ppo.ref))
    assert stats["kl_loss"] >= 0.0
    assert moved[50.0] < 0.5 * moved[0.0]
