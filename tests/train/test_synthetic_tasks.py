"""The embedded synthetic task family: real tests, deterministic, and a disjoint held-out split."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from codealign.problems import Problem
from codealign.synthetic_tasks import (
    AGGREGATES,
    FILTERS,
    TRANSFORMS,
    TaskSpec,
    make_task_specs,
    make_tasks,
    make_tests,
    reference_output,
    split_combinations,
)


def run_python(code: str, stdin: str) -> str:
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=20, check=True).stdout


def test_make_tasks_is_deterministic_for_a_seed_and_differs_across_seeds():
    a_train, a_held = make_tasks(0)
    b_train, b_held = make_tasks(0)
    assert [p.model_dump() for p in a_train] == [p.model_dump() for p in b_train]
    assert [p.model_dump() for p in a_held] == [p.model_dump() for p in b_held]
    _, c_held = make_tasks(1)
    assert [p.id for p in c_held] != [p.id for p in a_held]


def test_heldout_combinations_never_appear_in_training_but_every_part_does():
    train, heldout = make_tasks(0)
    train_combos = {tuple(p.metadata["combination"]) for p in train}
    held_combos = {tuple(p.metadata["combination"]) for p in heldout}
    assert held_combos and not (held_combos & train_combos)
    assert not ({p.id for p in train} & {p.id for p in heldout})
    assert not ({p.statement for p in train} & {p.statement for p in heldout})
    for i, parts in enumerate((FILTERS, TRANSFORMS, AGGREGATES)):
        assert {c[i] for c in train_combos} == set(parts)
    assert len(heldout) == 48 and len(train) > 500


def test_split_covers_all_combinations_exactly_once():
    train, held = split_combinations(3, 0.15)
    assert len(train) + len(held) == len(FILTERS) * len(TRANSFORMS) * len(AGGREGATES)
    assert not set(train) & set(held)


def test_problems_are_valid_synthetic_problems_with_several_tests():
    train, heldout = make_tasks(0, n_tests=5)
    for p in (*train[:20], *heldout):
        assert isinstance(p, Problem)
        assert p.source == "synthetic" and p.split in ("train", "test")
        assert len(p.all_tests()) == 5 and len(p.public_tests) == 1
        assert len({t.input for t in p.all_tests()}) == 5  # distinct random inputs
        assert p.solutions["python"][0] in p.solutions["python"]


def test_reference_solution_text_agrees_with_the_independent_reference_implementation():
    """The solution text is run as a real program; the expected outputs come from reference_output."""
    train, heldout = make_tasks(0)
    rng = random.Random(0)
    sample = rng.sample(train, 15) + heldout[:10]
    for p in sample:
        code = p.solutions["python"][0]
        for t in p.all_tests():
            assert run_python(code, t.input).split() == t.output.split(), (p.id, t)


def test_tests_reject_a_program_with_a_wrong_part():
    """Swapping one part of a solution (here the aggregate) fails at least one test."""
    spec = TaskSpec("greater", "square", "sum", filter_k=3)
    tests = make_tests(spec, random.Random(0), 4)
    wrong = spec.solution().replace("print(sum(b))", "print(max(b))")
    outputs = [run_python(wrong, t.input).split() for t in tests]
    assert any(o != t.output.split() for o, t in zip(outputs, tests))


def test_reference_output_by_hand():
    spec = TaskSpec("even", "add", "sorted", transform_k=3)
    assert spec.statement() == "Read integers from a line. Keep the even ones. Add 3 to each. Print them in increasing order."
    assert reference_output(spec, [4, 1, -2, 7, 10]) == "1 7 13"
    assert reference_output(TaskSpec("divisible", "modulo", "max", 3, 4), [9, -3, 5, 6]) == "2"  # 9%4, -3%4=1, 6%4=2
    assert reference_output(TaskSpec("all", "identity", "count"), [5, 5, 5]) == "3"


def test_tests_keep_at_least_one_number_so_max_is_defined():
    spec = TaskSpec("divisible", "identity", "max", filter_k=5)
    for t in make_tests(spec, random.Random(1), 6):
        assert any(int(x) % 5 == 0 for x in t.input.split())


def test_bad_heldout_fraction_is_rejected_clearly():
    with pytest.raises(ValueError, match="heldout_fraction"):
        make_task_specs(0, heldout_fraction=0.95)
