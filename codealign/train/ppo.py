"""PPO on execution rewards, as in Xu et al. (ICML 2024) and ReaLHF. Read top to bottom:

1. rollout: sample ``n_per_prompt`` programs per problem with the current policy and judge them
   (``collect`` is given by the round loop; it returns :class:`codealign.train.rollouts.Rollout`);
2. rewards: the execution score on the last response token, minus ``beta * KL(policy || ref)`` on
   every token;
3. GAE (gamma, lambda) with the critic's values;
4. factor 1: advantages normalized over all valid tokens of the batch (all processes together);
5. ``ppo_epochs`` passes over the batch in ``n_minibatches`` mini-batches, each accumulated over
   micro-batches of ``micro_batch_size`` rollouts (factor 2: a large global batch that still fits),
   clipped policy and value losses, gradient clipping, one optimizer step per mini-batch;
6. factor 3: the reference moves toward the policy, ``ref = (1 - eta) ref + eta policy``.

Losses are token sums divided by the mini-batch's *global* valid-token count, so gradient
accumulation and data-parallel averaging give exactly the gradient of one big batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from codealign.train import losses as L
from codealign.train.distributed import global_sum, no_sync, rollout_stats
from codealign.train.models import PackedBatch, ema_update, logprobs, pack

if TYPE_CHECKING:  # torch-only at run time, so benchmarks/train_step.py runs where pydantic is absent
    from codealign.train.config import PPOConfig
    from codealign.train.models import ValueModel
    from codealign.train.rollouts import Rollout


class PPO:
    """Owns the actor/critic optimizers; :meth:`step` runs one PPO iteration on fresh rollouts."""

    def __init__(self, policy, critic: "ValueModel", ref, cfg: "PPOConfig", pad_id: int, accelerator):
        self.cfg, self.pad_id, self.acc = cfg, pad_id, accelerator
        actor_opt = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad], lr=cfg.actor_lr, weight_decay=cfg.weight_decay
        )
        critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay)
        self.policy, self.critic, self.actor_opt, self.critic_opt = accelerator.prepare(policy, critic, actor_opt, critic_opt)
        self.ref = ref.to(accelerator.device)
        self.on_gradients: Callable[["PPO"], None] | None = None

    @property
    def unwrapped_policy(self):
        return self.acc.unwrap_model(self.policy)

    def state_dict(self) -> dict:
        return {"actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])

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
        with torch.no_grad():
            old_logp = self._chunked(lambda b: logprobs(self.policy, b)[0], batch)
            ref_logp = self._chunked(lambda b: logprobs(self.ref, b)[0], batch)
            old_values = self._chunked(lambda b: self.critic(b.input_ids, b.attention_mask), batch)
        mask = batch.mask
        rewards, kl = L.shaped_rewards(score, old_logp, ref_logp, mask, cfg.beta, cfg.reward_clip, cfg.kl_estimator)

        # 3. GAE ---------------------------------------------------------------------------------------
        adv, returns = L.gae(rewards, old_values * mask, mask, cfg.gamma, cfg.lam)

        # 4. factor 1: normalize advantages over every valid token of the (global) batch ---------------
        if cfg.advantage_normalization:
            adv = L.normalize_advantages(adv, mask, sum_all=lambda t: global_sum(acc, t))

        # 5. PPO epochs over mini-batches, gradient accumulation over micro-batches ---------------------
        sums = {k: torch.zeros((), device=acc.device) for k in ("pg", "vf", "clipped", "vclipped", "approx_kl", "entropy", "tokens")}
        grad_norms = []
        B = len(rollouts)
        n_mb = max(1, min(cfg.n_minibatches, B))
        self.policy.train(False)  # no dropout: the first epoch's ratio must be exactly 1
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
                        values = self.critic(mb.input_ids, mb.attention_mask)
                        vf_sum, vf_stats = L.value_loss(values, old_values[idx], returns[idx], m, cfg.value_clip)
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
                grad_norms.append(float(acc.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)))
                acc.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
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
                "value_mean": float(L.masked_mean(old_values, mask)),
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
