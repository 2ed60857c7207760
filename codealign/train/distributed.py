"""What the trainers need to give the same result on one process or many (accelerate / DDP).

Torch only (no pydantic), like ``ppo.py`` and ``dpo.py``, so ``benchmarks/train_step.py`` runs on a
bare GPU image.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from codealign.train.rollouts import Rollout


def no_sync(acc, model, sync: bool):
    """Context for one micro-batch's backward: skip DDP's gradient all-reduce unless ``sync`` (the last
    micro-batch of a mini-batch); gradients still add up locally."""
    return contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)


def global_sum(acc, t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over every process (a copy; ``t`` itself is left alone)."""
    t = t.detach().clone()
    return t if acc.num_processes == 1 else acc.reduce(t, "sum")


def rollout_stats(rollouts: Sequence["Rollout"], acc) -> dict[str, float]:
    """Reward mean, pass rate, judge errors, response length of a step's rollouts, over all processes."""
    t = torch.tensor(
        [
            len(rollouts),
            sum(r.reward for r in rollouts if r.judged),
            sum(r.judged for r in rollouts),
            sum(r.passed for r in rollouts),
            sum(not r.judged for r in rollouts),
            sum(r.code is None for r in rollouts),
            sum(len(r.response_ids) for r in rollouts),
        ],
        dtype=torch.float64,
        device=acc.device,
    )
    t = global_sum(acc, t).tolist()
    n = max(t[0], 1.0)
    return {
        "n_rollouts": t[0],
        "reward_mean": t[1] / max(t[2], 1.0),
        "pass_rate": t[3] / n,
        "judge_errors": t[4],
        "no_code_frac": t[5] / n,
        "response_len": t[6] / n,
    }
