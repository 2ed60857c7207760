"""Advantage estimators, registered by the ``--algo`` name that selects them.

Every PPO-family algorithm shares PPO's rollouts, clipped surrogate loss, mini-batches and optimizer
(``ppo.py``); they differ only in how a sample's advantage is computed, where the KL penalty goes
(per-token in the reward, or a k3 term in the loss) and how the per-token loss is averaged. Notation:
a step samples a *group* of G programs per problem; s_i is program i's (clipped) execution score,
KL_t = log pi_old(y_t) - log pi_ref(y_t) per token (k1 unless ``ppo.kl_estimator`` says otherwise),
beta = ``ppo.beta``.

======== ======================================================= =========== ===================== ==========
algo     advantage of every token of sample i                    critic      KL                    loss mean
======== ======================================================= =========== ===================== ==========
ppo      GAE(gamma, lambda) on r_t = -beta KL_t + [t=T] s_i      yes         in the reward         token
grpo     (s_i - mean_G s) / (std_G s + eps)                      no          k3 in the loss        sequence
drgrpo   s_i - mean_G s                                          no          k3 in the loss        constant
rloo     R_i - mean_{j != i} R_j,  R_i = s_i - beta sum_t KL_t   no          in the reward         token
reinforce++ whiten_batch(sum_{u >= t} gamma^(u-t) r_u), r as ppo no          in the reward         token
======== ======================================================= =========== ===================== ==========

Loss means (``loss_mean``): *token* = sum over the mini-batch's tokens / its token count (PPO);
*sequence* = mean over sequences of each sequence's token mean (GRPO, DeepSeekMath eq. 3);
*constant* = sum over tokens / (sequences x ``sampling.max_new_tokens``), no length normalisation
(Dr.GRPO). KL "in the loss" adds beta * k3(pi || pi_ref) per token to the clipped surrogate (GRPO).
Sources and default betas: ``config.ALGO_DEFAULTS`` and docs/train.md.

Pure tensor functions, unit-tested against hand-computed values (tests/train/test_advantages.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from codealign.train import losses as L

SumAll = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AdvantageInputs:
    """What an estimator may use; per-token tensors (B, T) in the log-prob layout (``losses.py``)."""

    score: torch.Tensor  # (B,) clipped execution score of each sample
    rewards: torch.Tensor  # (B, T) -beta KL_t per token + score on the last (losses.shaped_rewards; no KL if kl_in="loss")
    mask: torch.Tensor  # (B, T) 1 on (judged) response tokens
    groups: torch.Tensor  # (B,) long: samples of the same problem share a value
    gamma: float = 1.0
    lam: float = 1.0
    values: torch.Tensor | None = None  # (B, T) critic values (GAE only)
    sum_all: SumAll | None = None  # sums over processes (batch statistics of the global batch)


@dataclass(frozen=True)
class Estimator:
    """One registered estimator: how advantages are computed and what the update must do with them."""

    algo: str
    compute: Callable[[AdvantageInputs], tuple[torch.Tensor, torch.Tensor | None]]  # -> (advantages, returns or None)
    needs_critic: bool
    kl_in: Literal["reward", "loss"]
    loss_mean: Literal["token", "sequence", "constant"]
    source: str


ESTIMATORS: dict[str, Estimator] = {}


def register(algo: str, *, needs_critic: bool = False, kl_in: str = "reward", loss_mean: str = "token", source: str):
    """Decorator: register ``fn(inputs) -> (advantages, returns | None)`` as the estimator of ``algo``."""

    def add(fn):
        ESTIMATORS[algo] = Estimator(algo, fn, needs_critic, kl_in, loss_mean, source)  # type: ignore[arg-type]
        return fn

    return add


# -- group statistics (samples of one problem in one step) --------------------------------------------


def group_mean(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of ``x`` over the valid members of each sample's group, valid group size), per sample."""
    _, idx = torch.unique(groups, return_inverse=True)
    n = torch.zeros(int(idx.max()) + 1, dtype=x.dtype, device=x.device).index_add_(0, idx, valid)
    total = torch.zeros_like(n).index_add_(0, idx, x * valid)
    return (total / n.clamp(min=1))[idx], n[idx]


def group_std(x: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation (n - 1 in the denominator, as torch.std; 0 for a group of one) of
    ``x`` over the valid members of each sample's group, per sample."""
    mean, n = group_mean(x, groups, valid)
    sq, _ = group_mean((x - mean) ** 2, groups, valid)
    return torch.sqrt(sq * n / (n - 1).clamp(min=1))


def _per_token(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return per_sample[:, None] * mask


def _valid(mask: torch.Tensor) -> torch.Tensor:
    """1 for samples with response tokens in the loss (judged ones), else 0."""
    return (mask.sum(dim=1) > 0).to(mask.dtype)


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = sum_{u >= t} gamma^(u - t) r_u over each row's valid tokens; 0 off-mask."""
    out = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running * mask[:, t]
        out[:, t] = running * mask[:, t]
    return out


# -- the estimators -------------------------------------------------------------------------------------


@register("ppo", needs_critic=True, source="GAE (Schulman et al. 2016) with a critic; PPO as in Xu et al. 2024 / ReaLHF")
def gae(x: AdvantageInputs):
    assert x.values is not None, "GAE needs the critic's values"
    return L.gae(x.rewards, x.values * x.mask, x.mask, x.gamma, x.lam)


#: GRPO's std guard (verl: 1e-6).
GRPO_EPS = 1e-6


@register("grpo", kl_in="loss", loss_mean="sequence", source="GRPO, Shao et al. 2024 (DeepSeekMath), outcome supervision")
def grpo(x: AdvantageInputs):
    valid = _valid(x.mask)
    mean, _ = group_mean(x.score, x.groups, valid)
    std = group_std(x.score, x.groups, valid)
    return _per_token((x.score - mean) / (std + GRPO_EPS), x.mask), None


@register("drgrpo", kl_in="loss", loss_mean="constant", source="Dr.GRPO, Liu et al. 2025 (Understanding R1-Zero-Like Training)")
def drgrpo(x: AdvantageInputs):
    mean, _ = group_mean(x.score, x.groups, _valid(x.mask))
    return _per_token(x.score - mean, x.mask), None


@register("rloo", source="RLOO, Ahmadian et al. 2024 (Back to Basics), after Kool et al. 2019")
def rloo(x: AdvantageInputs):
    valid = _valid(x.mask)
    reward = L.masked_sum(x.rewards, x.mask, dim=1)  # s_i - beta sum_t KL_t
    mean, n = group_mean(reward, x.groups, valid)
    # mean of the others: (n mean - R_i) / (n - 1); a group of one has no baseline and learns nothing
    loo = (n * mean - reward) / (n - 1).clamp(min=1)
    adv = torch.where(n > 1, reward - loo, torch.zeros_like(reward))
    return _per_token(adv, x.mask), None


@register("reinforce++", source="REINFORCE++, Hu 2025: token KL in the reward, batch-whitened returns")
def reinforce_pp(x: AdvantageInputs):
    ret = returns_to_go(x.rewards, x.mask, x.gamma)
    return L.normalize_advantages(ret, x.mask, sum_all=x.sum_all), None


# -- loss means ---------------------------------------------------------------------------------------------


def loss_weights(loss_mean: str, mask: torch.Tensor, max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token weights (B, T), per-sample denominators (B,)) of a loss mean: a mini-batch's loss
    is sum(loss_t * weight_t) / sum(denominator_i) over its samples (and processes), so gradient
    accumulation and data parallelism give the gradient of the whole mini-batch."""
    lengths = mask.sum(dim=1)
    has = (lengths > 0).to(mask.dtype)
    if loss_mean == "token":
        return mask, lengths
    if loss_mean == "sequence":
        return mask / lengths.clamp(min=1)[:, None], has
    if loss_mean == "constant":
        return mask, has * float(max_new_tokens)
    raise ValueError(f"unknown loss mean {loss_mean!r}")
