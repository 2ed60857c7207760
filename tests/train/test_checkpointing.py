"""Gradient checkpointing is effective for policy and critic, and dropout is off through the config.

Checkpointing shows as recomputation: with it on, every decoder layer of the policy and of the critic
runs once more per micro-batch of the update (its forward is replayed in backward; counted on the
layer's MLP, since transformers checkpoints a layer's ``forward``, inside its own hooks). The models train in
``train()`` mode (transformers only checkpoints there), with dropout off in their settings, so PPO's
first-epoch ratio stays exactly 1.
"""

import sys
from pathlib import Path

import torch

from codealign.train.config import DPOConfig, ModelConfig, PPOConfig
from codealign.train.dpo import DPO, Pair
from codealign.train.models import ValueModel, make_reference, prepare_policy
from codealign.train.ppo import PPO

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import cpu_accelerator, rollout, tiny_lm  # noqa: E402

ROLLOUTS = [rollout([3, 4, 5], [6, 7, 8, 1], 10.0), rollout([3, 4, 5], [9, 10, 1], 0.0)] * 4  # 8


def dropout_lm():
    """The tiny LM with dropout configured (attention dropout 0.5): what a hub config may carry."""
    model = tiny_lm()
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    return model


def build_ppo(checkpointing: bool, **over):
    policy = dropout_lm()
    critic = ValueModel(policy, gradient_checkpointing=checkpointing)
    policy = prepare_policy(policy, ModelConfig(gradient_checkpointing=checkpointing))
    cfg = PPOConfig(**{"n_minibatches": 2, "micro_batch_size": 2, **over})  # 2 mini-batches x 2 micro-batches
    return PPO(policy, critic, make_reference(policy), cfg, pad_id=0, accelerator=cpu_accelerator())


def count_layer_calls(ppo):
    """Forward calls of each model's decoder layers, counted on their MLPs (and whether they ran in training mode)."""
    calls = {"policy": 0, "critic": 0, "ref": 0, "eval_mode_grad_calls": 0}
    layers = {
        "policy": ppo.unwrapped_policy.model.layers,
        "critic": ppo.critic.backbone.layers,
        "ref": ppo.ref.model.layers,
    }
    for name, mods in layers.items():
        for layer in mods:
            def hook(module, args, name=name):
                calls[name] += 1
                if torch.is_grad_enabled() and not module.training:
                    calls["eval_mode_grad_calls"] += 1

            layer.mlp.register_forward_pre_hook(hook)
    return calls


def test_checkpointing_recomputes_every_policy_and_critic_layer_in_the_update():
    counts = {}
    for checkpointing in (False, True):
        ppo = build_ppo(checkpointing)
        calls = count_layer_calls(ppo)
        ppo.step([None], lambda _: ROLLOUTS)
        counts[checkpointing] = calls
    off, on = counts[False], counts[True]
    n_layers, update_micro_batches = 2, 4
    assert on["eval_mode_grad_calls"] == off["eval_mode_grad_calls"] == 0  # the update runs in train mode
    for name in ("policy", "critic"):
        assert on[name] - off[name] == n_layers * update_micro_batches, (name, off, on)
    assert on["ref"] == off["ref"]  # frozen, no backward: nothing to recompute


def test_dropout_configured_in_the_model_is_off_and_the_first_epoch_ratio_is_one_with_checkpointing():
    ppo = build_ppo(True, n_minibatches=1, micro_batch_size=8)
    policy = ppo.unwrapped_policy
    assert policy.training and all(layer.self_attn.attention_dropout == 0.0 for layer in policy.model.layers)
    assert policy.config.attention_dropout == 0.0 and ppo.critic.backbone.config.attention_dropout == 0.0
    stats = ppo.step([None], lambda _: ROLLOUTS)
    assert stats["approx_kl"] == 0.0 and stats["clip_frac"] == 0.0


def test_with_dropout_left_on_the_ratio_would_not_be_one():
    """The control for the test above: the same step with the configured dropout active."""
    policy = dropout_lm()
    policy.train()
    critic = ValueModel(tiny_lm())
    ppo = PPO(policy, critic, make_reference(policy), PPOConfig(n_minibatches=1, micro_batch_size=8), 0, cpu_accelerator())
    torch.manual_seed(0)
    assert ppo.step([None], lambda _: ROLLOUTS)["approx_kl"] > 0.0


def test_dpo_updates_in_train_mode_with_checkpointing():
    policy = prepare_policy(tiny_lm(), ModelConfig(gradient_checkpointing=True))
    dpo = DPO(policy, make_reference(policy), DPOConfig(batch_size=2, micro_batch_size=1), 0, None, cpu_accelerator())
    forwards = []
    for layer in dpo.unwrapped_policy.model.layers:
        layer.mlp.register_forward_pre_hook(lambda m, a: forwards.append((torch.is_grad_enabled(), m.training)))
    pair = Pair("p", [3, 4, 5], [6, 7, 1], [9, 10, 1])
    import codealign.train.dpo as dpo_module

    real = dpo_module.build_pairs
    dpo_module.build_pairs = lambda *a, **k: [pair, pair]
    try:
        dpo.step([], lambda ps, m: [], 0)
    finally:
        dpo_module.build_pairs = real
    with_grad = [training for grad, training in forwards if grad]
    # 2 micro-batches x 2 layers, each forward replayed in backward
    assert with_grad and all(with_grad) and len(with_grad) == 2 * 2 * 2


def test_an_optimizer_state_saved_by_the_previous_version_still_loads():
    """Checkpoints written before optimizer states were keyed by parameter name hold torch's own
    ``Optimizer.state_dict()`` (integer keys); a single-process resume loads them as they are."""
    from codealign.train.sharding import load_full_optimizer_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    old_format = opt.state_dict()
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    load_full_optimizer_state(model, fresh, old_format, world=1)
    for p in model.parameters():
        assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
        assert float(fresh.state[p]["step"]) == 1.0
