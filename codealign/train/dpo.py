"""DPO and iterative DPO on preference pairs built from execution verdicts.

Pairs (per prompt, :func:`build_pairs`): a passing sample is *chosen*, a failing one *rejected*.
``pairing = "one"`` takes one random pair per prompt; ``"all"`` takes up to ``max_pairs_per_prompt``
distinct (passing, failing) combinations. When no sample of a prompt passes and
``reference_as_chosen`` is set, the dataset's reference solution (formatted like a model answer)
is chosen instead, as Xu et al. (2024) do on APPS. Samples the judge could not judge are never used.

* **DPO** (``iterative = False``): samples come from the *starting* policy and the reference stays
  the starting policy: offline DPO, with fresh samples of that fixed policy each step.
* **DPO-Iter** (``iterative = True``): each step samples with the *current* policy; at the end of every
  round the reference becomes that round's model (``ref <- policy``).

Loss (Rafailov et al. 2023): ``-log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])``
with sequence log-probs summed over response tokens (:func:`codealign.train.losses.dpo_loss`);
``nll_weight > 0`` adds ``nll_weight * (-log pi(y_w) / |y_w|)`` (RPO, Pang et al. 2024).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from codealign.train.distributed import global_sum, no_sync, rollout_stats
from codealign.train.losses import dpo_loss
from codealign.train.models import copy_weights, pack, sequence_logprobs
from codealign.train.precision import check_master_weights
from codealign.train.sharding import (
    clip_grad_norm,
    full_optimizer_state,
    full_state_dict,
    load_full_optimizer_state,
    load_full_state_dict,
    prepare_models,
)

if TYPE_CHECKING:  # torch-only at run time (benchmarks/train_step.py runs where pydantic is absent)
    from codealign.problems import Problem
    from codealign.train.config import DPOConfig
    from codealign.train.rollouts import Rollout


@dataclass
class Pair:
    problem_id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_is_reference: bool = False


def reference_response(problem: Problem, tokenizer) -> list[int] | None:
    """The problem's first Python reference solution as response tokens, in the answer format the
    prompts ask for (a fenced block, then EOS), or None when the dataset has none."""
    solutions = problem.solutions.get("python") or []
    if not solutions:
        return None
    from codealign.train.sft import format_response, response_ids

    return response_ids(tokenizer, format_response(solutions[0]))  # exactly as the warm start teaches it


def build_pairs(
    problems: Sequence[Problem], rollouts: Sequence[Rollout], cfg: DPOConfig, tokenizer, rng: random.Random
) -> list[Pair]:
    """Preference pairs from judged rollouts (see the module docstring for the policy)."""
    by_problem: dict[str, list[Rollout]] = {}
    for r in rollouts:
        by_problem.setdefault(r.problem_id, []).append(r)
    pairs: list[Pair] = []
    for problem in problems:
        group = [r for r in by_problem.get(problem.id, []) if r.judged]
        if not group:
            continue
        prompt_ids = group[0].prompt_ids
        chosen = _distinct([r.response_ids for r in group if r.passed])
        rejected = _distinct([r.response_ids for r in group if not r.passed])
        from_reference = False
        if not chosen and cfg.reference_as_chosen:
            ref = reference_response(problem, tokenizer)
            chosen, from_reference = ([ref], True) if ref is not None else ([], False)
        if not chosen or not rejected:
            continue
        combos = [(c, r) for c in chosen for r in rejected]
        rng.shuffle(combos)
        keep = 1 if cfg.pairing == "one" else cfg.max_pairs_per_prompt
        pairs += [Pair(problem.id, prompt_ids, c, r, from_reference) for c, r in combos[:keep]]
    return pairs


def _distinct(seqs: list[list[int]]) -> list[list[int]]:
    seen, out = set(), []
    for s in seqs:
        if tuple(s) not in seen:
            seen.add(tuple(s))
            out.append(s)
    return out


class DPO:
    """Owns the policy optimizer; :meth:`step` samples, pairs and updates; :meth:`end_round` moves the
    reference for DPO-Iter."""

    def __init__(self, policy, ref, cfg: DPOConfig, pad_id: int, tokenizer, accelerator, seed: int = 0, sharding: str = "none"):
        self.cfg, self.pad_id, self.tokenizer, self.acc = cfg, pad_id, tokenizer, accelerator
        check_master_weights(policy, "policy")
        (self.policy,), (self.ref,) = prepare_models(accelerator, [policy], [ref], sharding)  # before the optimizer
        self.opt = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
        self.policy.zero_grad(set_to_none=True)  # a gradient left by whoever built the model stays out of the first update
        self.seed = seed
        self.on_gradients: Callable[["DPO"], None] | None = None  # tests compare these across process counts

    @property
    def unwrapped_policy(self):
        return self.acc.unwrap_model(self.policy)

    def state_dict(self) -> dict:
        """Everything a resume needs, whole fp32 tensors on the main process. Every process must call it."""
        return {
            "policy": full_state_dict(self.policy),
            "ref": full_state_dict(self.ref),
            "opt": full_optimizer_state(self.policy, self.opt),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`; with several processes only the main one needs the tensors."""
        world = self.acc.num_processes
        load_full_state_dict(self.policy, state.get("policy", {}), world)
        load_full_state_dict(self.ref, state.get("ref", {}), world)
        load_full_optimizer_state(self.policy, self.opt, state.get("opt", {}), world)

    def sampling_model(self):
        """Whose samples become pairs: the current policy (DPO-Iter) or the fixed start policy (DPO)."""
        return self.unwrapped_policy if self.cfg.iterative else self.ref

    def step(self, problems: Sequence[Problem], collect: Callable, step_index: int) -> dict[str, float]:
        cfg, acc = self.cfg, self.acc
        t0 = time.perf_counter()
        rollouts: list[Rollout] = collect(problems, self.sampling_model())
        rng = random.Random(f"{self.seed}-{step_index}-{acc.process_index}")
        pairs = build_pairs(problems, rollouts, cfg, self.tokenizer, rng)
        t1 = time.perf_counter()

        # Every process must run the same number of backward passes (DDP all-reduces in each), so
        # pad the local pair list with zero-weight copies up to the largest count of any process.
        n_local = len(pairs)
        n_max = int(acc.reduce(torch.tensor(n_local, device=acc.device), "max"))
        stats = {"n_pairs": float(global_sum(acc, torch.tensor(float(n_local), device=acc.device)))}
        stats["reference_chosen"] = float(global_sum(acc, torch.tensor(float(sum(p.chosen_is_reference for p in pairs)), device=acc.device)))
        sums = {k: torch.zeros((), device=acc.device) for k in ("loss", "nll", "acc", "margin", "chosen", "rejected", "w")}
        grad_norms = []
        if n_max > 0:
            filler = pairs[0] if pairs else _self_pair(rollouts, self.tokenizer)
            weights = [1.0] * n_local + [0.0] * (n_max - n_local)
            pairs = pairs + [filler] * (n_max - n_local)
            ref_c, ref_r = self._ref_logps(pairs)
            self.policy.train()  # dropout is off in the weights' settings; gradient checkpointing needs train mode
            for _ in range(cfg.epochs):
                order = torch.randperm(n_max, generator=torch.Generator().manual_seed(self.seed * 100_003 + step_index))
                for batch_idx in order.split(cfg.batch_size):
                    w_batch = torch.tensor([weights[i] for i in batch_idx], device=acc.device)
                    total_w = global_sum(acc, w_batch.sum()).clamp(min=1)
                    micros = batch_idx.split(cfg.micro_batch_size)
                    for j, idx in enumerate(micros):
                        w = torch.tensor([weights[i] for i in idx], device=acc.device)
                        sub = [pairs[i] for i in idx]
                        pc, pr = self._policy_logps(sub)
                        losses, st = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], cfg.beta)
                        # RPO: the chosen programs' per-token NLL keeps them likely, not just ahead
                        n_tok = torch.tensor([len(p.chosen_ids) for p in sub], device=acc.device, dtype=pc.dtype)
                        nll = -pc / n_tok
                        total = losses + cfg.nll_weight * nll if cfg.nll_weight > 0 else losses
                        loss = (total * w).sum() * acc.num_processes / total_w
                        with no_sync(acc, self.policy, j == len(micros) - 1):
                            acc.backward(loss)
                        sums["loss"] += (losses.detach() * w).sum()
                        sums["nll"] += (nll.detach() * w).sum()
                        sums["acc"] += (st["accuracy"] * w).sum()
                        sums["margin"] += ((st["chosen_reward"] - st["rejected_reward"]) * w).sum()
                        sums["chosen"] += (st["chosen_reward"] * w).sum()
                        sums["rejected"] += (st["rejected_reward"] * w).sum()
                        sums["w"] += w.sum()
                    if self.on_gradients is not None:
                        self.on_gradients(self)
                    grad_norms.append(clip_grad_norm(acc, self.policy.parameters(), cfg.max_grad_norm))
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        tot = {k: float(global_sum(acc, v)) for k, v in sums.items()}
        w = max(tot["w"], 1.0)
        stats.update(rollout_stats(rollouts, acc))
        stats.update(
            {
                "dpo_loss": tot["loss"] / w,
                "chosen_nll": tot["nll"] / w,  # per token; the RPO term is nll_weight x this
                "pref_accuracy": tot["acc"] / w,
                "reward_margin": tot["margin"] / w,
                "chosen_reward": tot["chosen"] / w,
                "rejected_reward": tot["rejected"] / w,
                "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
                "rollout_s": t1 - t0,  # sampling + judging + pairing
                "update_s": t2 - t1,
                "update_tokens_per_s": cfg.epochs * sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs) / max(t2 - t1, 1e-9),
            }
        )
        return stats

    def end_round(self) -> None:
        """DPO-Iter: the next round's reference is this round's final model."""
        if self.cfg.iterative:
            copy_weights(self.ref, self.unwrapped_policy)

    def _batch(self, pairs: Sequence[Pair], which: str):
        prompts = [p.prompt_ids for p in pairs]
        responses = [p.chosen_ids if which == "chosen" else p.rejected_ids for p in pairs]
        return pack(prompts, responses, self.pad_id, self.acc.device)

    def _policy_logps(self, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        # chosen and rejected in one forward: half the kernel launches
        both = pack(
            [p.prompt_ids for p in pairs] * 2,
            [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs],
            self.pad_id,
            self.acc.device,
        )
        lp = sequence_logprobs(self.policy, both)
        return lp[: len(pairs)], lp[len(pairs) :]

    @torch.no_grad()
    def _ref_logps(self, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        c, r = [], []
        for i in range(0, len(pairs), self.cfg.micro_batch_size):
            sub = pairs[i : i + self.cfg.micro_batch_size]
            c.append(sequence_logprobs(self.ref, self._batch(sub, "chosen")))
            r.append(sequence_logprobs(self.ref, self._batch(sub, "rejected")))
        return torch.cat(c), torch.cat(r)


def _self_pair(rollouts: Sequence[Rollout], tokenizer) -> Pair:
    """A zero-weight stand-in pair for a process that has none this step (keeps DDP in step)."""
    r = rollouts[0] if rollouts else None
    ids = r.response_ids if r else [tokenizer.eos_token_id]
    return Pair(r.problem_id if r else "", r.prompt_ids if r else [tokenizer.eos_token_id], ids, ids)

