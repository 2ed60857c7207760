"""pass@k and n@k against brute force over every k-subset; APPS averages; breakdowns."""

import itertools
import math

import pytest

from codealign.metrics import (
    SampleOutcome,
    by_group,
    mean_pass_at_k,
    n_at_k,
    n_at_k_once,
    pass_at_k,
    pass_at_k_se,
    strict_accuracy,
    test_case_average as apps_test_case_average,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_fraction_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_at_k_1000():
    # Binomial form: C(2000, 1000) overflows floats; the product form does not.
    exact = 1 - math.comb(1990, 1000) / math.comb(2000, 1000)
    assert pass_at_k(2000, 10, 1000) == pytest.approx(exact, rel=1e-9)
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert pass_at_k(1000, 0, 1000) == 0.0 and pass_at_k(1000, 1, 1000) == 1.0


def test_pass_at_k_rejects_impossible_arguments():
    for args in [(5, 6, 1), (5, 2, 6), (5, 2, 0), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*args)


def test_mean_pass_at_k_averages_problems_and_rejects_k_above_n():
    got = mean_pass_at_k([(4, 1), (4, 4), (4, 0)], [1, 2])
    assert got[1] == pytest.approx((0.25 + 1 + 0) / 3)
    assert got[2] == pytest.approx((0.5 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="exceeds"):
        mean_pass_at_k([(4, 1), (2, 1)], [1, 3])


def test_pass_at_k_se_is_the_standard_error_over_problems():
    # per-problem pass@1: 0.25, 1, 0; mean 5/12; sample variance ((1/6)^2 + (7/12)^2 + (5/12)^2) / 2
    var = ((0.25 - 5 / 12) ** 2 + (1 - 5 / 12) ** 2 + (5 / 12) ** 2) / 2
    assert pass_at_k_se([(4, 1), (4, 4), (4, 0)], [1])[1] == pytest.approx(math.sqrt(var / 3))
    assert pass_at_k_se([(4, 2), (4, 2)], [1, 2]) == {1: 0.0, 2: 0.0}  # no spread between problems
    assert pass_at_k_se([(4, 2)], [1]) == {1: 0.0}
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k_se([(2, 1)], [3])


def outcome(i, public_ok, sig, correct):
    return SampleOutcome(index=i, public_ok=public_ok, signature=sig, correct=correct)


def test_n_at_k_submits_largest_clusters_first():
    # Cluster "a" (3 members, wrong), "b" (2 members, right), "c" (1, right), one filtered-out right sample.
    outs = [
        outcome(0, True, "a", False),
        outcome(1, True, "b", True),
        outcome(2, True, "a", False),
        outcome(3, False, "z", True),
        outcome(4, True, "a", False),
        outcome(5, True, "b", True),
        outcome(6, True, "c", True),
    ]
    assert n_at_k_once(outs, 1) is False  # submits cluster a
    assert n_at_k_once(outs, 2) is True  # a, then b
    # Only the filtered sample is right: never submitted.
    assert n_at_k_once([outcome(0, False, "x", True), outcome(1, True, "y", False)], 5) is False
    assert n_at_k_once([], 1) is False


def test_n_at_k_ties_break_towards_the_earliest_cluster():
    outs = [outcome(0, True, "late", False), outcome(1, True, "early", True)]
    assert n_at_k_once(outs, 1) is False
    assert n_at_k_once(list(reversed(outs)), 1) is False  # order of the list does not matter, indices do


def test_n_at_k_is_the_mean_over_all_k_subsets():
    outs = [outcome(i, i % 3 != 0, f"s{i % 2}", i in (2, 4)) for i in range(7)]
    subsets = list(itertools.combinations(outs, 3))
    want = sum(n_at_k_once(s, 1) for s in subsets) / len(subsets)
    assert n_at_k(outs, 1, 3) == pytest.approx(want)
    assert n_at_k(outs, 1, 7) == float(n_at_k_once(outs, 1))
    # Above max_exact it samples subsets; still a valid rate close to the exact one.
    approx = n_at_k(outs, 1, 3, max_exact=1, trials=4000, seed=1)
    assert approx == pytest.approx(want, abs=0.05)


def test_apps_averages_and_difficulty_breakdown():
    assert apps_test_case_average({"a": [1.0, 0.5], "b": [0.0]}) == pytest.approx(0.375)
    assert strict_accuracy([(2, 1), (4, 4)]) == pytest.approx(0.75)
    assert by_group({"a": 1.0, "b": 0.0, "c": 0.5}, {"a": "easy", "b": "easy", "c": None}) == {"easy": 0.5, "unknown": 0.5}
