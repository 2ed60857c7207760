"""Value normalisation (PPO option ``value_norm``, ReaLHF's default): the critic regresses returns
standardised by running statistics, and its outputs are mapped back to reward units for GAE.

Without it, a freshly initialised critic (outputs ~0) regresses raw returns on the 0..10 reward scale;
its first updates are dominated by that scale rather than by which states are better. With it, the
targets have mean ~0 and std ~1 whatever the reward scale.

Statistics (as in ReaLHF's exponential running mean/std): exponential moving averages of the mean and
of the mean square of the valid tokens' returns, ``m <- beta m + (1 - beta) batch_mean``, divided by the
debiasing term ``1 - beta^k`` after k updates (so the first update gives exactly the batch's moments).
The variance is floored at ``min_var`` so that a batch of equal returns (e.g. nothing passed) does not
blow the normalised targets up. Torch only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class RunningMoments(nn.Module):
    """Running mean/variance of returns; buffers, so they travel with the critic's state dict."""

    def __init__(self, beta: float = 0.99995, min_var: float = 1e-2):
        super().__init__()
        self.beta, self.min_var = beta, min_var
        self.register_buffer("mean_acc", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sq_acc", torch.zeros((), dtype=torch.float64))
        self.register_buffer("debias", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor, sum_all: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Fold in the valid (``mask`` = 1) entries of ``x``; ``sum_all`` sums over processes (the global batch)."""
        total = sum_all or (lambda t: t)
        x, mask = x.double(), mask.double()
        n = total((mask).sum()).clamp(min=1)
        batch_mean = total((x * mask).sum()) / n
        batch_sq = total((x * x * mask).sum()) / n
        b = self.beta
        self.mean_acc.mul_(b).add_((1 - b) * batch_mean)
        self.sq_acc.mul_(b).add_((1 - b) * batch_sq)
        self.debias.mul_(b).add_(1 - b)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std); (0, 1) before the first update."""
        if float(self.debias) == 0.0:
            one = torch.ones((), dtype=torch.float64, device=self.debias.device)
            return one * 0, one
        mean = self.mean_acc / self.debias
        var = (self.sq_acc / self.debias - mean**2).clamp(min=self.min_var)
        return mean, var.sqrt()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.moments()
        return ((x - mean) / std).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.moments()
        return (x * std + mean).to(x.dtype)
