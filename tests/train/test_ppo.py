"""One PPO iteration on a real (tiny, randomly initialised) causal LM with hand-made rollouts."""

import copy
import sys
from pathlib import Path

import pytest
import torch

from codealign.train.config import PPOConfig
from codealign.train.models import ValueModel, make_reference, pack, sequence_logprobs
from codealign.train.ppo import PPO

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import cpu_accelerator, rollout, tiny_lm  # noqa: E402

PROMPT = [3, 4, 5]
GOOD = [6, 7, 8, 1]
BAD = [9, 10, 11, 1]


def make_ppo(**over):
    policy = tiny_lm()
    cfg = PPOConfig(**{"actor_lr": 3e-3, "critic_lr": 1e-2, "n_minibatches": 1, **over})
    ppo = PPO(policy, ValueModel(policy), make_reference(policy), cfg, pad_id=0, accelerator=cpu_accelerator())
    return ppo


def batch_rollouts():
    return [rollout(PROMPT, GOOD, 10.0) for _ in range(4)] + [rollout(PROMPT, BAD, 0.0) for _ in range(4)]


def margin(model):
    b = pack([PROMPT, PROMPT], [GOOD, BAD], 0)
    with torch.no_grad():
        lp = sequence_logprobs(model, b)
    return float(lp[0] - lp[1])


def test_ppo_raises_the_rewarded_response_over_the_unrewarded_one():
    ppo = make_ppo()
    before = margin(ppo.unwrapped_policy)
    for _ in range(5):
        stats = ppo.step([None], lambda _: batch_rollouts())
    assert margin(ppo.unwrapped_policy) > before + 0.5
    assert stats["reward_mean"] == pytest.approx(5.0) and stats["pass_rate"] == pytest.approx(0.5)


def test_first_minibatch_of_first_epoch_has_ratio_one():
    ppo = make_ppo(n_minibatches=1, ppo_epochs=1)
    stats = ppo.step([None], lambda _: batch_rollouts())
    assert stats["approx_kl"] == 0.0 and stats["clip_frac"] == 0.0


def test_no_gradient_reaches_the_reference_and_ema_moves_it_exactly():
    ppo = make_ppo(ema_reference=True, ema_eta=0.25)
    ref0 = copy.deepcopy(ppo.ref.state_dict())
    assert not any(p.requires_grad for p in ppo.ref.parameters())
    ppo.step([None], lambda _: batch_rollouts())
    assert all(p.grad is None for p in ppo.ref.parameters())
    pol = ppo.unwrapped_policy.state_dict()
    for name, value in ppo.ref.state_dict().items():
        assert torch.allclose(value, 0.75 * ref0[name] + 0.25 * pol[name], atol=1e-6), name


def test_without_ema_the_reference_stays_put():
    ppo = make_ppo(ema_reference=False)
    ref0 = copy.deepcopy(ppo.ref.state_dict())
    ppo.step([None], lambda _: batch_rollouts())
    assert all(torch.equal(v, ref0[k]) for k, v in ppo.ref.state_dict().items())
    assert margin(ppo.unwrapped_policy) != margin(ppo.ref)


def test_unjudged_samples_train_nothing():
    ppo = make_ppo()
    before = copy.deepcopy(ppo.unwrapped_policy.state_dict())
    rolls = [rollout(PROMPT, GOOD, 10.0, judged=False) for _ in range(4)]
    stats = ppo.step([None], lambda _: rolls)
    assert stats["judge_errors"] == 4
    assert all(torch.equal(v, before[k]) for k, v in ppo.unwrapped_policy.state_dict().items())


def test_gradient_accumulation_gives_the_large_batch_gradient():
    grads = {}
    for micro in (8, 3, 1):
        ppo = make_ppo(micro_batch_size=micro)
        torch.manual_seed(0)
        ppo.on_gradients = lambda p, micro=micro: grads.__setitem__(
            micro, [q.grad.clone() for q in p.policy.parameters() if q.grad is not None]
        )
        ppo.step([None], lambda _: batch_rollouts())
    for micro in (3, 1):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[8], grads[micro]))
