"""pass@k, AlphaCode n@k, APPS test-case average, per-difficulty breakdowns.

All figures are fractions in [0, 1].
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, eq. 1).

    ``1 - C(n-c, k) / C(n, k)`` in the numerically stable product form
    ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, exact for n in the thousands where the binomials overflow.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[int, float]:
    """Mean over problems of pass@k, for each k; ``counts`` holds (n, c) per problem.

    Raises ``ValueError`` when some k exceeds a problem's n (the estimator is undefined there).
    """
    counts = list(counts)
    if not counts:
        raise ValueError("no problems to score")
    min_n = min(n for n, _ in counts)
    bad = [k for k in ks if k > min_n]
    if bad:
        raise ValueError(f"k={bad} exceeds the number of samples n={min_n} of some problem (need k <= n)")
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}


def pass_at_k_se(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[int, float]:
    """Standard error of :func:`mean_pass_at_k`: the sample standard deviation of the per-problem
    pass@k estimates over sqrt(number of problems). It covers both the choice of problems and the
    sampling noise within each problem (each problem's estimate carries its own); 0 for one problem."""
    counts = list(counts)
    mean_pass_at_k(counts, ks)  # same checks
    if len(counts) < 2:
        return {k: 0.0 for k in ks}
    return {k: float(np.std([pass_at_k(n, c, k) for n, c in counts], ddof=1) / np.sqrt(len(counts))) for k in ks}


@dataclass(frozen=True)
class SampleOutcome:
    """What n@k needs to know about one sample.

    ``public_ok``: passed the public tests (the filter). ``signature``: a hashable summary of its
    outputs on the clustering inputs (equal signatures = same cluster). ``correct``: passed all hidden
    tests. ``index``: the sample's position, used to break ties deterministically.
    """

    index: int
    public_ok: bool
    signature: Hashable
    correct: bool


def n_at_k_once(outcomes: Sequence[SampleOutcome], n_submit: int) -> bool:
    """AlphaCode's n@k on one set of k samples: filter, cluster, submit one per cluster, largest first.

    Survivors of the public-test filter are grouped by signature; clusters are taken largest first (ties:
    the cluster whose first sample came first) and each submits its earliest sample. The problem counts
    as solved when any of the first ``n_submit`` submissions is correct. No survivor: not solved.
    """
    clusters: dict[Hashable, list[SampleOutcome]] = defaultdict(list)
    for o in sorted(outcomes, key=lambda o: o.index):
        if o.public_ok:
            clusters[o.signature].append(o)
    ranked = sorted(clusters.values(), key=lambda members: (-len(members), members[0].index))
    return any(members[0].correct for members in ranked[:n_submit])


def n_at_k(
    outcomes: Sequence[SampleOutcome], n_submit: int, k: int, *, max_exact: int = 2000, trials: int = 200, seed: int = 0
) -> float:
    """n@k for one problem: the expected solve rate of :func:`n_at_k_once` on k of the samples.

    The expectation over k-subsets of the samples is exact (every subset enumerated) when there are at
    most ``max_exact`` subsets, else estimated from ``trials`` random subsets (fixed ``seed``). With k
    equal to the number of samples it is the single deterministic outcome (0 or 1). AlphaCode likewise
    estimates n@k from a larger pool of samples by resampling.
    """
    if not 1 <= k <= len(outcomes):
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={len(outcomes)}")
    if math.comb(len(outcomes), k) <= max_exact:
        subsets: Iterable[Sequence[SampleOutcome]] = itertools.combinations(outcomes, k)
    else:
        rng = random.Random(seed)
        subsets = (rng.sample(list(outcomes), k) for _ in range(trials))
    return float(np.mean([n_at_k_once(s, n_submit) for s in subsets]))


def test_case_average(fractions_by_problem: Mapping[str, Sequence[float]]) -> float:
    """APPS' test-case average: per problem the mean fraction of tests passed over its samples, then the mean over problems."""
    if not fractions_by_problem:
        raise ValueError("no problems to score")
    return float(np.mean([np.mean(f) if len(f) else 0.0 for f in fractions_by_problem.values()]))


def strict_accuracy(counts: Iterable[tuple[int, int]]) -> float:
    """APPS' strict accuracy: the mean over problems of the fraction of samples passing every test (= pass@1)."""
    counts = list(counts)
    if not counts:
        raise ValueError("no problems to score")
    return float(np.mean([c / n for n, c in counts]))


def by_group(values: Mapping[str, float], groups: Mapping[str, str | None]) -> dict[str, float]:
    """Mean of per-problem ``values`` within each group (e.g. difficulty); problems without a group go to "unknown"."""
    acc: dict[str, list[float]] = defaultdict(list)
    for pid, v in values.items():
        acc[groups.get(pid) or "unknown"].append(v)
    return {g: float(np.mean(v)) for g, v in sorted(acc.items())}
