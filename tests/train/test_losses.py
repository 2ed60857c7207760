"""PPO/DPO losses, GAE, KL and advantage normalization against hand-computed values and direct formulas."""

import math

import pytest
import torch

from codealign.train import losses as L


def test_gae_matches_hand_computed_example():
    # one row: 1 prompt position (masked out), 3 response tokens, 1 pad
    rewards = torch.tensor([[0.0, -0.1, -0.2, 9.7, 0.0]])
    values = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.8
    # by hand, backwards from the last response token (terminal after it):
    d3 = 9.7 - 3.0  # 6.7
    a3 = d3
    d2 = -0.2 + 0.9 * 3.0 - 2.0  # 0.5
    a2 = d2 + 0.9 * 0.8 * a3  # 0.5 + 0.72 * 6.7 = 5.324
    d1 = -0.1 + 0.9 * 2.0 - 1.0  # 0.7
    a1 = d1 + 0.72 * a2  # 0.7 + 3.83328 = 4.53328
    adv, ret = L.gae(rewards, values, mask, gamma, lam)
    assert adv[0].tolist() == pytest.approx([0.0, a1, a2, a3, 0.0], abs=1e-5)
    assert ret[0].tolist() == pytest.approx([0.0, a1 + 1.0, a2 + 2.0, a3 + 3.0, 0.0], abs=1e-5)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    torch.manual_seed(0)
    rewards = torch.randn(3, 6)
    values = torch.randn(3, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.float32)
    adv, ret = L.gae(rewards, values, mask, 1.0, 1.0)
    for b in range(3):
        for t in range(6):
            if mask[b, t]:
                togo = sum(rewards[b, s] for s in range(t, 6) if mask[b, s])
                assert adv[b, t].item() == pytest.approx(float(togo - values[b, t]), abs=1e-5)
                assert ret[b, t].item() == pytest.approx(float(togo), abs=1e-5)
            else:
                assert adv[b, t] == 0 and ret[b, t] == 0


def test_shaped_rewards_put_score_on_last_token_and_kl_everywhere():
    logp = torch.tensor([[0.0, -1.0, -2.0, -0.5], [0.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, -0.5], [0.0, -0.5, 0.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    score = torch.tensor([30.0, -3.0])
    rewards, kl = L.shaped_rewards(score, logp, ref, mask, beta=0.1, reward_clip=20.0)
    assert kl.flatten().tolist() == pytest.approx([0.0, 0.5, -1.0, 0.0, 0.0, -0.5, 0.0, 0.0])
    # row 0: score clipped to 20 on the last token (index 3); row 1: last token is index 1
    assert rewards.flatten().tolist() == pytest.approx([0.0, -0.05, 0.1, 20.0, 0.0, 0.05 - 3.0, 0.0, 0.0])


def test_kl_estimators_match_their_formulas():
    logp = torch.tensor([-0.2, -1.0, -3.0])
    ref = torch.tensor([-0.7, -1.0, -0.1])
    d = logp - ref
    assert L.kl_estimate(logp, ref, "k1").tolist() == pytest.approx(d.tolist())
    assert L.kl_estimate(logp, ref, "k2").tolist() == pytest.approx((0.5 * d**2).tolist())
    k3 = [math.exp(-x) - 1 + x for x in d.tolist()]
    assert L.kl_estimate(logp, ref, "k3").tolist() == pytest.approx(k3, abs=1e-6)
    assert all(v >= 0 for v in k3)
    with pytest.raises(ValueError, match="k4"):
        L.kl_estimate(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_kl_estimates():
    # sample from p, average the estimators, compare with the exact KL(p || q)
    torch.manual_seed(0)
    p = torch.softmax(torch.tensor([1.0, 0.2, -0.5, 0.0]), 0)
    q = torch.softmax(torch.tensor([0.3, 0.9, -0.1, -1.0]), 0)
    exact = float((p * (p.log() - q.log())).sum())
    x = torch.multinomial(p, 200_000, replacement=True)
    for kind in ("k1", "k3"):
        est = L.kl_estimate(p.log()[x], q.log()[x], kind).mean().item()
        assert est == pytest.approx(exact, abs=0.01)


def test_advantage_normalization_uses_all_valid_tokens_of_the_batch():
    adv = torch.tensor([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = L.normalize_advantages(adv, mask)
    valid = torch.tensor([1.0, 2.0, 3.0])
    expect = (valid - valid.mean()) / valid.std(unbiased=False)
    assert [out[0, 0].item(), out[0, 1].item(), out[1, 0].item()] == pytest.approx(expect.tolist(), abs=1e-4)
    assert out[0, 2] == 0 and out[1, 1] == 0 and out[1, 2] == 0


def test_ppo_policy_loss_matches_direct_formula():
    torch.manual_seed(1)
    logp = torch.randn(2, 5) * 0.3
    old = torch.randn(2, 5) * 0.3
    adv = torch.randn(2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.float32)
    loss, stats = L.ppo_policy_loss(logp, old, adv, mask, clip=0.2)
    total, clipped, n = 0.0, 0, 0
    for b in range(2):
        for t in range(5):
            if not mask[b, t]:
                continue
            r = math.exp(logp[b, t] - old[b, t])
            a = adv[b, t].item()
            total += -min(r * a, min(max(r, 0.8), 1.2) * a)
            clipped += (-min(max(r, 0.8), 1.2) * a) > (-r * a)
            n += 1
    assert loss.item() == pytest.approx(total, abs=1e-5)
    assert stats["clipped"].item() == clipped


def test_ppo_policy_gradient_vanishes_outside_the_clip_range():
    logp = torch.tensor([[0.5]], requires_grad=True)  # ratio e^0.5 > 1.2 with positive advantage: clipped
    loss, _ = L.ppo_policy_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip=0.2)
    loss.backward()
    assert logp.grad.item() == 0.0


def test_value_loss_matches_direct_formula():
    values = torch.tensor([[1.0, 2.0, 0.5]])
    old = torch.tensor([[0.5, 2.5, 0.5]])
    ret = torch.tensor([[3.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = L.value_loss(values, old, ret, mask, clip=0.2)
    # token 0: v=1, clip(v) = 0.7 -> max((1-3)^2, (0.7-3)^2) = 5.29; token 1: v=2, clip = 2.3 -> max(0, 0.09)
    assert loss.item() == pytest.approx(0.5 * (5.29 + 0.09), abs=1e-5)
    assert stats["clipped"].item() == 2
    unclipped, _ = L.value_loss(values, old, ret, mask, clip=None)
    assert unclipped.item() == pytest.approx(0.5 * (4.0 + 0.0))


def test_dpo_loss_matches_direct_formula():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -2.0])
    rc, rr = torch.tensor([-11.0, -3.5]), torch.tensor([-11.0, -2.5])
    losses, stats = L.dpo_loss(pc, pr, rc, rr, beta=0.1)
    for i in range(2):
        m = 0.1 * ((pc[i] - rc[i]) - (pr[i] - rr[i])).item()
        assert losses[i].item() == pytest.approx(-math.log(1 / (1 + math.exp(-m))), abs=1e-6)
    assert stats["accuracy"].tolist() == [1.0, 0.0]
    assert stats["chosen_reward"].tolist() == pytest.approx([0.1, 0.05])


def test_token_logprobs_and_entropy():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [0.25, 0.75]
    assert L.token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    ent = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    logits.requires_grad_(True)
    lp, h = L.logprobs_and_entropy(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.75)) and h.item() == pytest.approx(ent)
    assert lp.requires_grad and not h.requires_grad  # the entropy is a statistic: no graph kept for it
