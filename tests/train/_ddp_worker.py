"""Worker for test_distributed.py: one PPO step and one DPO step in 1 or N processes (gloo on CPU).

Run alone (one process, all rollouts / pairs) or under ``python -m torch.distributed.run --nproc_per_node N``
(each rank takes its shard). ``argv``: OUT SHARDING (none|fsdp) MIXED_PRECISION (no|bf16). Rank 0 writes
``OUT/result.pt``: the first mini-batch's gradients (gathered whole), the weights after the step (policy,
critic, reference, gathered to rank 0), what a vLLM push would send, and a checkpoint round trip.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import rollout, tiny_lm  # noqa: E402


def rollouts():
    # different lengths and rewards, so shards hold different token counts
    out = []
    for i in range(8):
        response = [6 + (i % 5), 7 + (i % 3)] + [8 + j for j in range(i % 4)] + [1]
        out.append(rollout([3, 4, 5 + i % 2], response, reward=10.0 * (i % 3 == 0), pid=f"p{i}"))
    return out


def whole(t):
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def grads_of(model):
    from codealign.train.sharding import unwrap

    return {n: whole(p.grad) for n, p in unwrap(model).named_parameters() if p.grad is not None}


def main(out_dir: str, sharding: str, mixed: str) -> None:
    from accelerate import Accelerator

    from codealign.train.config import DPOConfig, PPOConfig
    from codealign.train.dpo import DPO, Pair
    from codealign.train.models import ValueModel, make_reference
    from codealign.train.ppo import PPO
    from codealign.train.sharding import full_state_dict, iter_full_tensors
    from codealign.train.value_norm import RunningMoments

    acc = Accelerator(cpu=True, mixed_precision=mixed)
    rank, world = acc.process_index, acc.num_processes
    result = {"world": world, "backend": str(acc.state.backend)}

    # -- PPO: policy, critic (value normalisation on), EMA reference -----------------------------------
    policy = tiny_lm(seed=0)
    cfg = PPOConfig(n_minibatches=1, micro_batch_size=2, ppo_epochs=1, actor_lr=1e-3, critic_lr=1e-3, ema_eta=0.25,
                    value_norm=True)
    critic = ValueModel(policy, value_norm=RunningMoments())
    # a non-zero value head: with standardised targets a zero head's bias gradient is 0 in exact arithmetic,
    # and AdamW's first step would turn its rounding noise into +-lr
    torch.nn.init.constant_(critic.head.bias, 0.5)
    ppo = PPO(policy, critic, make_reference(policy), cfg, pad_id=0, accelerator=acc, sharding=sharding)
    ref0 = {k: v.clone() for k, v in full_state_dict(ppo.ref).items()}  # (unsharded CPU tensors alias the model)
    mine = rollouts()[rank::world]
    grads = {}

    def keep(p):
        grads["policy"] = grads_of(p.policy)
        grads["critic"] = grads_of(p.critic)

    ppo.on_gradients = keep
    torch.manual_seed(0)
    ppo.step([None], lambda _: mine)
    result["ppo_grads"] = grads
    result["ppo_ref0"] = ref0
    state = ppo.state_dict()
    result["ppo_state"] = state
    result["ppo_pushed"] = dict(iter_full_tensors(ppo.unwrapped_policy))
    result["ppo_master_dtypes"] = {p.dtype for p in ppo.policy.parameters()} | {p.dtype for p in ppo.critic.parameters()}
    # a checkpoint round trip into differently initialised models: only rank 0 holds the tensors
    other = tiny_lm(seed=1)
    ppo2 = PPO(other, ValueModel(other, value_norm=RunningMoments()), make_reference(other), cfg, 0, acc, sharding=sharding)
    ppo2.load_state_dict(state if acc.is_main_process else {})
    result["ppo_reloaded"] = ppo2.state_dict()

    # -- DPO: policy and reference, DPO-Iter's copy at the end of the round ----------------------------
    policy = tiny_lm(seed=2)
    dcfg = DPOConfig(lr=1e-3, batch_size=4, micro_batch_size=1, nll_weight=1.0)
    dpo = DPO(policy, make_reference(policy), dcfg, 0, None, acc, sharding=sharding)
    rolls = rollouts()
    pairs = [Pair(a.problem_id, a.prompt_ids, a.response_ids, b.response_ids) for a, b in zip(rolls[::2], rolls[1::2])]
    import codealign.train.dpo as dpo_module

    dpo_module.build_pairs = lambda *a, **k: pairs[rank::world]  # fixed pairs, sharded like rollouts
    dgrads = {}
    dpo.on_gradients = lambda d: dgrads.setdefault("policy", grads_of(d.policy))
    dpo.step([], lambda ps, m: rolls[rank::world], 0)
    dpo.end_round()
    result["dpo_grads"] = dgrads
    result["dpo_state"] = dpo.state_dict()
    if acc.is_main_process:
        torch.save(result, Path(out_dir) / "result.pt")
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:] or ["none", "no"]))
