"""bf16 mixed precision: fp32 master weights and EMA reference, bf16 compute; bf16 trained weights refused.

On CPU (bf16 autocast works there): the numbers the GPU run depends on, not its speed.
"""

import copy
import sys
from pathlib import Path

import pytest
import torch

from codealign.train.config import ConfigError, PPOConfig, build_config
from codealign.train.models import ValueModel, make_reference
from codealign.train.ppo import PPO

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import rollout, tiny_lm  # noqa: E402

ROLLOUTS = [rollout([3, 4, 5], [6, 7, 8, 1], 10.0), rollout([3, 4, 5], [9, 10, 1], 0.0)] * 2


def small_init(model):
    """Weights ~ N(0, 0.02), the scale of a pretrained LM's, where bf16's step is ~1e-4."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


def bf16_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True, mixed_precision="bf16")


def test_adamw_on_bf16_weights_drops_small_updates():
    """The failure mixed precision avoids: AdamW at lr 1e-6 on bf16 N(0, 0.02) weights leaves most unchanged."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4096) * 0.02)
    for dtype, expect_changed in ((torch.bfloat16, lambda f: f < 0.1), (torch.float32, lambda f: f > 0.99)):
        p = torch.nn.Parameter(w.detach().to(dtype).clone())
        start = p.detach().clone()
        opt = torch.optim.AdamW([p], lr=1e-6, weight_decay=0.0)
        for _ in range(10):
            p.grad = torch.randn_like(p)
            opt.step()
        changed = float((p.detach() != start).float().mean())
        assert expect_changed(changed), (dtype, changed)


def test_ppo_in_bf16_moves_every_weight_at_lr_1e6_and_the_fp32_ema_follows_the_exact_one():
    policy = small_init(tiny_lm(hidden=32))
    cfg = PPOConfig(actor_lr=1e-6, critic_lr=1e-6, n_minibatches=1, ema_reference=True, ema_eta=1e-3)
    ppo = PPO(policy, ValueModel(policy), make_reference(policy), cfg, pad_id=0, accelerator=bf16_accelerator())
    start = {n: p.detach().clone() for n, p in ppo.unwrapped_policy.named_parameters()}
    exact = {n: p.detach().double().clone() for n, p in ppo.ref.named_parameters()}
    in_bf16 = {n: p.detach().to(torch.bfloat16).clone() for n, p in ppo.ref.named_parameters()}
    bf16_start = {n: p.clone() for n, p in in_bf16.items()}
    for _ in range(5):
        ppo.step([None], lambda _: ROLLOUTS)
        with torch.no_grad():  # the exact EMA (float64) of the policy's trajectory, and one accumulated in bf16
            for n, p in ppo.unwrapped_policy.named_parameters():
                exact[n] = (1 - 1e-3) * exact[n] + 1e-3 * p.double()
                in_bf16[n].lerp_(p.detach().to(torch.bfloat16), 1e-3)
    params = dict(ppo.unwrapped_policy.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values()) and all(p.dtype == torch.float32 for p in ppo.ref.parameters())
    # every element whose gradient is above AdamW's eps (so its step is ~lr) moved; embedding rows of tokens
    # never seen and near-zero q/k gradients of this tiny random model get none
    touched = {n: ppo.actor_opt.state[p]["exp_avg_sq"].sqrt() > 1e-8 for n, p in params.items()}
    total = sum(int(t.sum()) for t in touched.values())
    changed = sum(int(((params[n].detach() != start[n]) & touched[n]).sum()) for n in params)
    assert total > 0.2 * sum(p.numel() for p in params.values()) and changed / total > 0.99, changed / total

    def drift(ref, origin=start):
        return sum(float((ref[n].double() - origin[n].double()).abs().sum()) for n in origin)

    observed, target = drift(dict(ppo.ref.named_parameters())), drift(exact)
    # the fp32 reference follows the exact EMA, each update eta x (policy - ref) (these first increments are
    # a few fp32 steps of each weight, hence 5%); accumulated in bf16 it barely moves
    assert target > 0 and observed == pytest.approx(target, rel=0.05)
    assert drift(in_bf16, bf16_start) < 0.2 * target


def test_bf16_compute_on_fp32_master_weights_and_optimizer_states():
    policy = tiny_lm()
    ppo = PPO(policy, ValueModel(policy), make_reference(policy), PPOConfig(n_minibatches=1), 0, bf16_accelerator())
    seen = {}
    for name, model in (("policy", ppo.unwrapped_policy), ("ref", ppo.ref), ("critic", ppo.critic)):
        lin = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        lin.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, (o.dtype, m.weight.dtype)) and None)
    ppo.step([None], lambda _: ROLLOUTS)
    assert seen == {k: (torch.bfloat16, torch.float32) for k in ("policy", "ref", "critic")}
    for opt in (ppo.actor_opt, ppo.critic_opt):
        assert {t.dtype for s in opt.state.values() for t in s.values()} == {torch.float32}


def test_trained_weights_in_bf16_are_refused_with_a_clear_message():
    policy = tiny_lm().to(torch.bfloat16)
    with pytest.raises(ValueError, match="model.dtype=float32.*mixed_precision=bf16"):
        PPO(policy, ValueModel(tiny_lm()), make_reference(policy), PPOConfig(), 0, bf16_accelerator())
    with pytest.raises(ConfigError, match="model.mixed_precision=bf16"):
        build_config(overrides=["model.dtype=bfloat16"])
    # a bf16 frozen base under fp32 LoRA adapters trains correctly, so it is accepted
    assert build_config(overrides=["model.dtype=bfloat16", "model.lora.enabled=true"]).model.dtype == "bfloat16"


def test_lora_policy_with_a_bf16_base_trains_fp32_adapters_and_the_critic_is_fp32():
    from codealign.train.config import ModelConfig
    from codealign.train.models import prepare_policy

    base = tiny_lm().to(torch.bfloat16)
    critic = ValueModel(base)
    policy = prepare_policy(base, ModelConfig(dtype="bfloat16", lora={"enabled": True, "r": 2, "target_modules": ["q_proj", "v_proj"]}))
    ref = make_reference(policy)
    frozen = {n: p.detach().clone() for n, p in ref.named_parameters() if "lora" not in n}
    ppo = PPO(policy, critic, ref, PPOConfig(n_minibatches=1, ema_eta=0.5), 0, bf16_accelerator())
    assert {p.dtype for p in ppo.critic.parameters()} == {torch.float32}
    assert {p.dtype for p in ppo.unwrapped_policy.parameters() if p.requires_grad} == {torch.float32}
    ppo.step([None], lambda _: ROLLOUTS)
    # the EMA leaves the frozen bf16 base bit for bit (no rounding drift) and moves the adapters
    assert all(torch.equal(p, frozen[n]) for n, p in ppo.ref.named_parameters() if "lora" not in n)
    assert any(not torch.equal(p, copy.deepcopy(p).zero_()) for n, p in ppo.ref.named_parameters() if "lora_B" in n)
