"""Worker for test_distributed.py: one PPO mini-batch gradient, in 1 or N processes (gloo on CPU).

Run alone (one process, all rollouts) or under ``python -m torch.distributed.run --nproc_per_node N``
(each rank takes its shard). Writes the policy and critic gradients of rank R to ``OUT/grads_R.pt``.
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


def main(out_dir: str) -> None:
    from accelerate import Accelerator

    from codealign.train.config import PPOConfig
    from codealign.train.models import ValueModel, make_reference
    from codealign.train.ppo import PPO

    acc = Accelerator(cpu=True)
    policy = tiny_lm(seed=0)
    cfg = PPOConfig(n_minibatches=1, micro_batch_size=2, ppo_epochs=1)
    ppo = PPO(policy, ValueModel(policy), make_reference(policy), cfg, pad_id=0, accelerator=acc)
    mine = rollouts()[acc.process_index :: acc.num_processes]
    grads = {}

    def keep(p):
        grads["policy"] = [q.grad.detach().clone() for q in p.policy.parameters()]
        grads["critic"] = [q.grad.detach().clone() for q in p.critic.parameters()]

    ppo.on_gradients = keep
    torch.manual_seed(0)
    ppo.step([None], lambda _: mine)
    torch.save({"grads": grads, "world": acc.num_processes, "backend": str(acc.state.backend)}, Path(out_dir) / f"grads_{acc.process_index}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
