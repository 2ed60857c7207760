"""PPO on execution rewards, as in Xu et al. (ICML 2024) and ReaLHF, and the critic-free estimators
that share its rollouts and clipped loss (GRPO, Dr.GRPO, RLOO, REINFORCE++: ``advantages.py``). Read
top to bottom:

1. rollout: sample ``n_per_prompt`` programs per problem with the current policy and judge them
   (``collect`` is given by the round loop; it returns :class:`codealign.train.rollouts.Rollout`);
2. rewards: the execution score on the last response token, minus ``beta * KL(policy || ref)`` on
   every token (unless the estimator puts the KL term in the loss);
3. advantages: GAE (gamma, lambda) with the critic's values for PPO (with ``value_norm``, its
   standardised outputs mapped back to reward units; it then regresses standardised returns), or the
   algorithm's estimator (group baselines, batch whitening; no critic);
4. factor 1 (PPO only): advantages normalized over all valid tokens of the batch (all processes together);
5. ``ppo_epochs`` passes over the batch in ``n_minibatches`` mini-batches, each accumulated over
   micro-batches of ``micro_batch_size`` rollouts (factor 2: a large global batch that still fits),
   clipped policy loss (+ KL term when in the loss) and value loss (PPO), gradient clipping, one
   optimizer step per mini-batch;
6. factor 3: the reference moves toward the policy, ``ref = (1 - eta) ref + eta policy``.

Losses are weighted token sums divided by the mini-batch's *global* count of the estimator's loss
mean (tokens for PPO), so gradient accumulation and data-parallel averaging give exactly the
gradient of one big batch. The models are placed by :mod:`codealign.train.sharding` (DDP or FSDP2),
computed in bf16 on fp32 master weights when mixed precision is on (:mod:`codealign.train.precision`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from codealign.train import losses as L
from codealign.train.advantages import ESTIMATORS, AdvantageInputs, loss_weights
from codealign.train.distributed import global_sum, no_sync, rollout_stats
from codealign.train.models import PackedBatch, ema_update, logprobs, pack
from codealign.train.precision import check_master_weights
from codealign.train.sharding import (
    clip_grad_norm,
    full_optimizer_state,
    full_state_dict,
    load_full_optimizer_state,
    load_full_state_dict,
    prepare_models,
    unwrap,
)

if TYPE_CHECKING:  # torch-only at run time, so benchmarks/train_step.py runs where pydantic is absent
    from codealign.train.config import PPOConfig
    from codealign.train.models import ValueModel
    from codealign.train.rollouts import Rollout


class PPO:
    """Owns the actor (and, for GAE, critic) optimizers; :meth:`step` runs one iteration on fresh
    rollouts. ``algo`` names the advantage estimator (``advantages.ESTIMATORS``); ``critic`` is None
    exactly when the estimator needs none. ``max_new_tokens`` is Dr.GRPO's loss constant."""

    def __init__(
        self, policy, critic: "ValueModel | None", ref, cfg: "PPOConfig", pad_id: int, accelerator,
        algo: str = "ppo", max_new_tokens: int = 1, sharding: str = "none",
    ):
        self.cfg, self.pad_id, self.acc = cfg, pad_id, accelerator
        self.estimator, self.max_new_tokens = ESTIMATORS[algo], max_new_tokens
        if (critic is not None) != self.estimator.needs_critic:
            raise ValueError(f"algo {algo!r} {'needs' if self.estimator.needs_critic else 'takes no'} critic")
        for model, what in ((policy, "policy"), (critic, "critic")):
            if model is not None:
                check_master_weights(model, what)
        # placed (DDP + autocast, or FSDP2 shards) before the optimizers, which hold the fp32 master weights
        (self.policy, self.critic), (self.ref,) = prepare_models(accelerator, [policy, critic], [ref], sharding)
        self.actor_opt = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad], lr=cfg.actor_lr, weight_decay=cfg.weight_decay
        )
        self.critic_opt = self.value_norm = None
        if self.critic is not None:
            self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay)
            self.value_norm = unwrap(self.critic).value_norm  # running return statistics, or None
        for model in (self.policy, self.critic):
            if model is not None:  # a gradient left by whoever built the model stays out of the first update
                model.zero_grad(set_to_none=True)
        self.on_gradients: Callable[["PPO"], None] | None = None

    @property
    def unwrapped_policy(self):
        return self.acc.unwrap_model(self.policy)

    def state_dict(self) -> dict:
        """Everything a resume needs, whole fp32 tensors on the main process. Every process must call it."""
        state = {
            "policy": full_state_dict(self.policy),
            "ref": full_state_dict(self.ref),
            "actor_opt": full_optimizer_state(self.policy, self.actor_opt),
        }
        if self.critic is not None:
            state["critic"] = full_state_dict(self.critic)
            state["critic_opt"] = full_optimizer_state(self.critic, self.critic_opt)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`; with several processes only the main one needs the tensors."""
        world = self.acc.num_processes
        for name in ("policy", "ref", "critic"):
            if getattr(self, name) is not None:
                load_full_state_dict(getattr(self, name), state.get(name, {}), world)
        load_full_optimizer_state(self.policy, self.actor_opt, state.get("actor_opt", {}), world)
        if self.critic is not None:
            load_full_optimizer_state(self.critic, self.critic_opt, state.get("critic_opt", {}), world)

    def step(self, problems: Sequence, collect: Callable[[Sequence], list["Rollout"]]) -> dict[str, float]:
        cfg, acc, est = self.cfg, self.acc, self.estimator
        t0 = time.perf_counter()

        # 1. rollout -------------------------------------------------------------------------------
        rollouts = collect(problems)
        t_rollout = time.perf_counter()
        batch = pack([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts], self.pad_id, acc.device)
        # a sample the judge could not judge trains nothing: its tokens leave the mask
        judged = torch.tensor([r.judged for r in rollouts], dtype=torch.float32, device=acc.device)
        batch.mask = batch.mask * judged[:, None]
        score = torch.tensor([r.reward for r in rollouts], dtype=torch.float32, device=acc.device)
        if cfg.reward_clip is not None:
            score = score.clamp(-cfg.reward_clip, cfg.reward_clip)
        group_of = {pid: i for i, pid in enumerate(dict.fromkeys(r.problem_id for r in rollouts))}
        groups = torch.tensor([group_of[r.problem_id] for r in rollouts], device=acc.device)

        # 2. rewards: execution score at the end, per-token KL penalty everywhere (when in the reward) -----
        # train mode (dropout is off in the weights' settings): gradient checkpointing acts only in it
        for model in (self.policy, self.critic):
            if model is not None:
                model.train()
        with torch.no_grad():
            old_logp = self._chunked(lambda b: logprobs(self.policy, b)[0], batch)
            ref_logp = self._chunked(lambda b: logprobs(self.ref, b)[0], batch)
            old_values = self._chunked(lambda b: self.critic(b.input_ids, b.attention_mask), batch) if self.critic else None
        mask = batch.mask
        beta_reward = cfg.beta if est.kl_in == "reward" else 0.0
        rewards, kl = L.shaped_rewards(score, old_logp, ref_logp, mask, beta_reward, None, cfg.kl_estimator)

        # 3. advantages: GAE with the critic (in reward units: a normalising critic's outputs are mapped
        # back first), or the algorithm's critic-free estimator ------------------------------------------
        sum_all = lambda t: global_sum(acc, t)  # noqa: E731
        values = old_values
        if self.value_norm is not None:
            values = self.value_norm.denormalize(old_values)
        adv, returns = est.compute(AdvantageInputs(score, rewards, mask, groups, cfg.gamma, cfg.lam, values, sum_all))
        targets = returns  # what the critic regresses
        if self.value_norm is not None:
            self.value_norm.update(returns, mask, sum_all=sum_all)
            targets = self.value_norm.normalize(returns) * mask

        # 4. factor 1: normalize advantages over every valid token of the (global) batch ---------------
        if cfg.advantage_normalization and est.needs_critic:  # critic-free estimators normalise their own way
            adv = L.normalize_advantages(adv, mask, sum_all=sum_all)

        # 5. PPO epochs over mini-batches, gradient accumulation over micro-batches ---------------------
        weight, denominator = loss_weights(est.loss_mean, mask, self.max_new_tokens)
        names = ("pg", "vf", "kl_loss", "clipped", "vclipped", "approx_kl", "entropy", "tokens")
        sums = {k: torch.zeros((), device=acc.device) for k in names}
        grad_norms = []
        B = len(rollouts)
        n_mb = max(1, min(cfg.n_minibatches, B))
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, device=acc.device)
            for mb_idx in perm.tensor_split(n_mb):  # exactly n_mb (chunk can make fewer)
                scale = acc.num_processes / global_sum(acc, denominator[mb_idx].sum()).clamp(min=1e-8)  # DDP averages
                vf_scale = acc.num_processes / global_sum(acc, mask[mb_idx].sum()).clamp(min=1)  # value loss: token mean
                micros = mb_idx.split(cfg.micro_batch_size)
                for j, idx in enumerate(micros):
                    mb = batch.index(idx)
                    m = mb.mask
                    sync = j == len(micros) - 1
                    with no_sync(acc, self.policy, sync):
                        new_logp, ent = logprobs(self.policy, mb, with_entropy=True)
                        pg_sum, pg_stats = L.ppo_policy_loss(new_logp, old_logp[idx], adv[idx], m, cfg.ratio_clip, weight[idx])
                        loss = pg_sum
                        if est.kl_in == "loss" and cfg.beta > 0:  # GRPO: beta * KL(pi || ref) per token
                            kl_t = L.kl_estimate(new_logp, ref_logp[idx], cfg.kl_estimator)
                            loss = loss + cfg.beta * L.masked_sum(kl_t, weight[idx])
                            sums["kl_loss"] += L.masked_sum(kl_t.detach(), m)
                        acc.backward(loss * scale)
                    if self.critic is not None:
                        with no_sync(acc, self.critic, sync):
                            new_values = self.critic(mb.input_ids, mb.attention_mask)
                            vf_sum, vf_stats = L.value_loss(new_values, old_values[idx], targets[idx], m, cfg.value_clip)
                            acc.backward(vf_sum * vf_scale)
                        sums["vf"] += vf_sum.detach()
                        sums["vclipped"] += vf_stats["clipped"]
                    sums["pg"] += pg_stats["loss"]
                    sums["clipped"] += pg_stats["clipped"]
                    sums["approx_kl"] += pg_stats["approx_kl"]
                    sums["entropy"] += L.masked_sum(ent.detach(), m)
                    sums["tokens"] += m.sum()
                if self.on_gradients is not None:  # tests compare these across process counts
                    self.on_gradients(self)
                grad_norms.append(clip_grad_norm(acc, self.policy.parameters(), cfg.max_grad_norm))
                self.actor_opt.step()
                self.actor_opt.zero_grad(set_to_none=True)
                if self.critic is not None:
                    clip_grad_norm(acc, self.critic.parameters(), cfg.max_grad_norm)
                    self.critic_opt.step()
                    self.critic_opt.zero_grad(set_to_none=True)

        # 6. factor 3: EMA reference --------------------------------------------------------------------
        if cfg.ema_reference:
            ema_update(self.ref, self.unwrapped_policy, cfg.ema_eta)

        t_end = time.perf_counter()
        tot = {k: float(global_sum(acc, v)) for k, v in sums.items()}
        ntok = max(tot["tokens"], 1.0)
        resp_tokens = float(global_sum(acc, mask.sum()))
        stats = rollout_stats(rollouts, acc)
        stats.update(
            {
                "kl": float(global_sum(acc, L.masked_sum(kl, mask))) / max(resp_tokens, 1.0),
                "kl_per_seq": float(global_sum(acc, L.masked_sum(kl, mask))) / max(stats["n_rollouts"], 1),
                "policy_loss": tot["pg"] / ntok,  # per-token clipped surrogate, whatever the loss mean
                "clip_frac": tot["clipped"] / ntok,
                "approx_kl": tot["approx_kl"] / ntok,
                "entropy": tot["entropy"] / ntok,
                "grad_norm": sum(grad_norms) / len(grad_norms),
                "adv_abs_mean": float(L.masked_mean(adv.abs(), mask)),
                "rollout_s": t_rollout - t0,  # sampling + judging (the round loop splits it: gen_s, judge_s)
                "update_s": t_end - t_rollout,
                "update_tokens_per_s": tot["tokens"] / max(t_end - t_rollout, 1e-9),
            }
        )
        if self.critic is not None:
            stats.update({"value_loss": tot["vf"] / ntok, "value_clip_frac": tot["vclipped"] / ntok,
                          "value_mean": float(L.masked_mean(values, mask))})  # reward units
        if est.kl_in == "loss":
            stats["kl_loss"] = tot["kl_loss"] / ntok  # per-token KL of the loss term (before beta)
        return stats

    def _chunked(self, fn, batch: PackedBatch) -> torch.Tensor:
        """``fn`` over micro-batches (memory), concatenated."""
        n = batch.input_ids.shape[0]
        outs = [fn(batch.index(slice(i, i + self.cfg.micro_batch_size))) for i in range(0, n, self.cfg.micro_batch_size)]
        width = max(o.shape[1] for o in outs)
        return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1])) for o in outs])
