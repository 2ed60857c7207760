"""PPO on execution rewards, as in Xu et al. (ICML 2024) and ReaLHF. Read top to bottom:

1. rollout: sample ``n_per_prompt`` programs per problem with the current policy and judge them
   (``collect`` is given by the round loop; it returns :class:`codealign.train.rollouts.Rollout`);
2. rewards: the execution score on the last response token, minus ``beta * KL(policy || ref)`` on
   every token;
3. GAE (gamma, lambda) with the critic's values (with ``value_norm``, its standardised outputs mapped back
   to reward units; it then regresses standardised returns);
4. factor 1: advantages normalized over all valid tokens of the batch (all processes together);
5. ``ppo_epochs`` passes over the batch in ``n_minibatches`` mini-batches, each accumulated over
   micro-batches of ``micro_batch_size`` rollouts (factor 2: a large global batch that still fits),
   clipped policy and value losses, gradient clipping, one optimizer step per mini-batch;
6. factor 3: the reference moves toward the policy, ``ref = (1 - eta) ref + eta policy``.

Losses are token sums divided by the mini-batch's *global* valid-token count, so gradient
accumulation and data-parallel averaging give exactly the gradient of one big batch. The models are
placed by :mod:`codealign.train.sharding` (DDP or FSDP2), computed in bf16 on fp32 master weights when
mixed precision is on (:mod:`codealign.train.precision`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from codealign.train import losses as L
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
    """Owns the actor/critic optimizers; :meth:`step` runs one PPO iteration on fresh rollouts."""

    def __init__(self, policy, critic: "ValueModel", ref, cfg: "PPOConfig", pad_id: int, accelerator, sharding: str = "none"):
        self.cfg, self.pad_id, self.acc = cfg, pad_id, accelerator
        check_master_weights(policy, "policy")
        check_master_weights(critic, "critic")
        # placed (DDP + autocast, or FSDP2 shards) before the optimizers, which hold the fp32 master weights
        (self.policy, self.critic), (self.ref,) = prepare_models(accelerator, [policy, critic], [ref], sharding)
        self.actor_opt = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad], lr=cfg.actor_lr, weight_decay=cfg.weight_decay
        )
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay)
        for model in (self.policy, self.critic):
            model.zero_grad(set_to_none=True)  # a gradient left by whoever built the model stays out of the first update
        self.value_norm = unwrap(self.critic).value_norm  # running return statistics, or None
        self.on_gradients: Callable[["PPO"], None] | None = None

    @property
    def unwrapped_policy(self):
        return self.acc.unwrap_model(self.policy)

    def state_dict(self) -> dict:
        """Everything a resume needs, whole fp32 tensors on the main process. Every process must call it."""
        return {
            "policy": full_state_dict(self.policy),
            "ref": full_state_dict(self.ref),
            "critic": full_state_dict(self.critic),
            "actor_opt": full_optimizer_state(self.policy, self.actor_opt),
            "critic_opt": full_optimizer_state(self.critic, self.critic_opt),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`; with several processes only the main one needs the tensors."""
        world = self.acc.num_processes
        for name in ("policy", "ref", "critic"):
            load_full_state_dict(getattr(self, name), state.get(name, {}), world)
        load_full_optimizer_state(self.policy, self.actor_opt, state.get("actor_opt", {}), world)
        load_full_optimizer_state(self.critic, self.critic_opt, state.get("critic_opt", {}), world)

    def step(self, problems: Sequence, collect: Callable[[Sequence], list["Rollout"]]) -> dict[str, float]:
        cfg, acc = self.cfg, self.acc
        t0 = time.perf_counter()

        # 1. rollout -------------------------------------------------------------------------------
        rollouts = collect(problems)
        t_rollout = time.perf_counter()
        batch = pack([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts], self.pad_id, acc.device)
        # a sample the judge could not judge trains nothing: its tokens leave the mask
        judged = torch.tensor([r.judged for r in rollouts], dtype=torch.float32, device=acc.device)
        batch.mask = batch.mask * judged[:, None]
        score = torch.tensor([r.reward for r in rollouts], dtype=torch.float32, device=acc.device)

        # 2. rewards: execution score at the end, per-token KL penalty everywhere -------------------
        # train mode (dropout is off in the weights' settings): gradient checkpointing acts only in it
        self.policy.train()
        self.critic.train()
        with torch.no_grad():
            old_logp = self._chunked(lambda b: logprobs(self.policy, b)[0], batch)
            ref_logp = self._chunked(lambda b: logprobs(self.ref, b)[0], batch)
            old_values = self._chunked(lambda b: self.critic(b.input_ids, b.attention_mask), batch)
        mask = batch.mask
        rewards, kl = L.shaped_rewards(score, old_logp, ref_logp, mask, cfg.beta, cfg.reward_clip, cfg.kl_estimator)

        # 3. GAE (in reward units: a normalising critic's outputs are mapped back first) ------------------
        values = old_values if self.value_norm is None else self.value_norm.denormalize(old_values)
        adv, returns = L.gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
        targets = returns  # what the critic regresses
        if self.value_norm is not None:
            self.value_norm.update(returns, mask, sum_all=lambda t: global_sum(acc, t))
            targets = self.value_norm.normalize(returns) * mask

        # 4. factor 1: normalize advantages over every valid token of the (global) batch ---------------
        if cfg.advantage_normalization:
            adv = L.normalize_advantages(adv, mask, sum_all=lambda t: global_sum(acc, t))

        # 5. PPO epochs over mini-batches, gradient accumulation over micro-batches ---------------------
        sums = {k: torch.zeros((), device=acc.device) for k in ("pg", "vf", "clipped", "vclipped", "approx_kl", "entropy", "tokens")}
        grad_norms = []
        B = len(rollouts)
        n_mb = max(1, min(cfg.n_minibatches, B))
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B, device=acc.device)
            for mb_idx in perm.tensor_split(n_mb):  # exactly n_mb (chunk can make fewer)
                mb_tokens = global_sum(acc, mask[mb_idx].sum()).clamp(min=1)
                scale = acc.num_processes / mb_tokens  # DDP averages over processes
                micros = mb_idx.split(cfg.micro_batch_size)
                for j, idx in enumerate(micros):
                    mb = batch.index(idx)
                    m = mb.mask
                    sync = j == len(micros) - 1
                    with no_sync(acc, self.policy, sync):
                        new_logp, ent = logprobs(self.policy, mb, with_entropy=True)
                        pg_sum, pg_stats = L.ppo_policy_loss(new_logp, old_logp[idx], adv[idx], m, cfg.ratio_clip)
                        acc.backward(pg_sum * scale)
                    with no_sync(acc, self.critic, sync):
                        new_values = self.critic(mb.input_ids, mb.attention_mask)
                        vf_sum, vf_stats = L.value_loss(new_values, old_values[idx], targets[idx], m, cfg.value_clip)
                        acc.backward(vf_sum * scale)
                    sums["pg"] += pg_sum.detach()
                    sums["vf"] += vf_sum.detach()
                    sums["clipped"] += pg_stats["clipped"]
                    sums["vclipped"] += vf_stats["clipped"]
                    sums["approx_kl"] += pg_stats["approx_kl"]
                    sums["entropy"] += L.masked_sum(ent.detach(), m)
                    sums["tokens"] += m.sum()
                if self.on_gradients is not None:  # tests compare these across process counts
                    self.on_gradients(self)
                grad_norms.append(clip_grad_norm(acc, self.policy.parameters(), cfg.max_grad_norm))
                clip_grad_norm(acc, self.critic.parameters(), cfg.max_grad_norm)
                self.actor_opt.step()
                self.critic_opt.step()
                self.actor_opt.zero_grad(set_to_none=True)
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
                "policy_loss": tot["pg"] / ntok,
                "value_loss": tot["vf"] / ntok,
                "clip_frac": tot["clipped"] / ntok,
                "value_clip_frac": tot["vclipped"] / ntok,
                "approx_kl": tot["approx_kl"] / ntok,
                "entropy": tot["entropy"] / ntok,
                "grad_norm": sum(grad_norms) / len(grad_norms),
                "adv_abs_mean": float(L.masked_mean(adv.abs(), mask)),
                "value_mean": float(L.masked_mean(values, mask)),  # reward units
                "rollout_s": t_rollout - t0,  # sampling + judging (the round loop splits it: gen_s, judge_s)
                "update_s": t_end - t_rollout,
                "update_tokens_per_s": tot["tokens"] / max(t_end - t_rollout, 1e-9),
            }
        )
        return stats

    def _chunked(self, fn, batch: PackedBatch) -> torch.Tensor:
        """``fn`` over micro-batches (memory), concatenated."""
        n = batch.input_ids.shape[0]
        outs = [fn(batch.index(slice(i, i + self.cfg.micro_batch_size))) for i in range(0, n, self.cfg.micro_batch_size)]
        width = max(o.shape[1] for o in outs)
        return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1])) for o in outs])
