"""Losses and estimators for PPO and DPO: small pure functions on tensors.

Shapes: ``(B, T)`` per-token tensors share one layout, where position ``t`` holds the quantity for the
token at ``t + 1`` of the packed sequence (the label of logits ``t``); ``mask`` is 1 on response tokens
and 0 on prompt and padding. Every mean below is over valid (masked-in) tokens only.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (0 when nothing is valid)."""
    if dim is None:
        return masked_sum(x, mask) / mask.sum().clamp(min=1)
    return masked_sum(x, mask, dim) / mask.sum(dim=dim).clamp(min=1)


def normalize_advantages(
    adv: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, sum_all: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Factor 1 of Xu et al. (2024): whiten advantages with the mean and std of *all valid tokens of the
    batch* (not per sequence). Padding stays 0. ``sum_all`` sums a tensor over processes (data
    parallel: the statistics are those of the global batch); None = this process's batch only."""
    total = sum_all or (lambda t: t)
    n = total(mask.sum()).clamp(min=1)
    mean = total(masked_sum(adv, mask)) / n
    var = total(masked_sum((adv - mean) ** 2, mask)) / n
    return (adv - mean) * torch.rsqrt(var + eps) * mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label_t | prefix) for each position: ``logits`` (B, T, V), ``labels`` (B, T) -> (B, T)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)


def logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs` and the per-position entropy (nats), from one log-softmax over ``logits``
    (B, T, V). The entropy is a statistic: computed without gradient, so no (B, T, V) graph is kept for it."""
    logp = F.log_softmax(logits.float(), dim=-1)
    lp = torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ent = -(logp.exp() * logp).sum(-1)
    return lp, ent


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman's estimators).

    k1 = log p - log q (unbiased, what ReaLHF and the paper put in the reward); k2 = (log p - log q)^2 / 2;
    k3 = (q/p - 1) - log(q/p) (unbiased, always >= 0).
    """
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}: use k1, k2 or k3")


def shaped_rewards(
    score: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    reward_clip: float | None = None,
    kl_kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: ``-beta * KL_t`` on every response token, plus the (clipped) sequence score
    from execution on the last response token. Returns (rewards, kl), both (B, T) and 0 off-mask."""
    kl = kl_estimate(logp, ref_logp, kl_kind) * mask
    rewards = -beta * kl
    if reward_clip is not None:
        score = score.clamp(-reward_clip, reward_clip)
    # index of the last valid token of each row (responses are contiguous)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
    has_tokens = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_tokens]
    rewards = rewards.clone()
    rewards[rows, last[has_tokens]] += score[has_tokens].to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over each row's contiguous run of valid tokens.

    delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t;  A_t = delta_t + gamma * lam * m_{t+1} * A_{t+1}.
    The state after the last response token is terminal (value 0). Returns (advantages, returns) with
    returns = advantages + values; both 0 off-mask.
    """
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(next_adv)
    next_mask = torch.zeros_like(next_adv)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        a = delta + gamma * lam * next_mask * next_adv
        adv[:, t] = a * mask[:, t]
        next_adv, next_value, next_mask = adv[:, t], values[:, t], mask[:, t].to(rewards.dtype)
    returns = (adv + values) * mask
    return adv, returns


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate, summed over valid tokens, each weighted by ``weight`` (default ``mask``; the
    caller divides by the count it wants, so gradient accumulation and multi-process averaging stay
    exact; see ``advantages.loss_weights``).

    L = -min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t),  r_t = exp(logp_t - old_logp_t).
    Returns (weighted sum of L, stats with plain token sums: L, clipped count, approx-KL).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        stats = {
            "loss": masked_sum(loss, mask),
            "clipped": masked_sum((clipped > unclipped).float(), mask),
            "approx_kl": masked_sum(0.5 * (logp - old_logp) ** 2, mask),
        }
    return masked_sum(loss, mask if weight is None else weight), stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss, summed over valid tokens: 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2)."""
    err = (values - returns) ** 2
    if clip is None:
        loss = 0.5 * err
        clipped_count = torch.zeros((), device=values.device)
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err_clip = (v_clip - returns) ** 2
        loss = 0.5 * torch.maximum(err, err_clip)
        clipped_count = masked_sum((err_clip > err).float().detach(), mask)
    return masked_sum(loss, mask), {"clipped": clipped_count}


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al. 2023) on sequence log-probs (sums over response tokens), one per pair.

    L = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]).
    Returns (per-pair losses, stats with implicit rewards and whether chosen beats rejected).
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    losses = -F.logsigmoid(margin)
    stats = {
        "chosen_reward": chosen_reward.detach(),
        "rejected_reward": rejected_reward.detach(),
        "accuracy": (margin > 0).float().detach(),
    }
    return losses, stats
