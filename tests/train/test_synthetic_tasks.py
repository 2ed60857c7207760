"""The embedded synthetic task family: real tests, deterministic, and an honest train / validation / test split."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from codealign import synthetic_tasks
from codealign.problems import Problem
from codealign.synthetic_tasks import (
    AGGREGATES,
    FILTERS,
    TRANSFORMS,
    TaskSpec,
    make_split,
    make_task_specs,
    make_tests,
    reference_output,
    split_combinations,
)


def run_python(code: str, stdin: str) -> str:
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=20, check=True).stdout


def test_make_split_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = make_split(0)
    synthetic_tasks._make_split.cache_clear()  # rebuilt from scratch, not the cached copy
    b = make_split(0)
    for name in ("train", "validation", "test"):
        assert [p.model_dump() for p in getattr(a, name)] == [p.model_dump() for p in getattr(b, name)]
    assert [p.id for p in make_split(1).test] != [p.id for p in a.test]


def test_heldout_combinations_never_appear_in_training_but_every_part_does():
    split = make_split(0)
    combos = {name: {tuple(p.metadata["combination"]) for p in getattr(split, name)} for name in ("train", "validation", "test")}
    assert not combos["validation"] & combos["train"] and not combos["test"] & combos["train"]
    assert not combos["validation"] & combos["test"]
    ids = [p.id for name in ("train", "validation", "test") for p in getattr(split, name)]
    assert len(ids) == len(set(ids))
    for i, parts in enumerate((FILTERS, TRANSFORMS, AGGREGATES)):
        assert {c[i] for c in combos["train"]} == set(parts)
    assert len(split.test) == 48 and len(split.validation) == 48 and len(split.train) > 500
    assert {p.split for p in split.test} == {"test"} and {p.split for p in split.validation} == {"validation"}


def test_split_problems_names_each_split_of_make_split():
    from codealign.synthetic_tasks import split_problems

    split = make_split(0)
    assert [p.id for p in split_problems("test")] == [p.id for p in split_problems("heldout")] == [p.id for p in split.test]
    assert [p.id for p in split_problems("val")] == [p.id for p in split.validation]
    assert len(split_problems("train")) == len(split.train)
    with pytest.raises(ValueError, match="no split 'dev'"):
        split_problems("dev")


def test_split_covers_all_combinations_exactly_once():
    train, held = split_combinations(3, 96)
    assert len(train) + len(held) == len(FILTERS) * len(TRANSFORMS) * len(AGGREGATES)
    assert not set(train) & {v[0].combination for v in held}


def _program(code: str):
    """The solution text compiled once, run in-process on one input line: what it prints, or None if it raises."""
    compiled = compile(code, "<solution>", "exec")

    def run(line: str) -> str | None:
        printed: list[str] = []
        env = {"input": lambda: line, "print": lambda *a: printed.append(" ".join(map(str, a)))}
        try:
            exec(compiled, env)
        except Exception:
            return None
        return "\n".join(printed)

    return run


def _passes(program, problem: Problem) -> bool:
    return all(program(t.input.strip()) == t.output.strip() for t in problem.all_tests())


def test_the_leak_check_sees_a_known_leak():
    """What the no-leak test below relies on: "count" ignores the transform, so (even, identity, count)'s
    program passes (even, square, count)'s tests; "divisible by 2" is "even"."""
    count = _program(TaskSpec("even", "identity", "count").solution())
    held = make_tests(TaskSpec("even", "square", "count"), random.Random(0), 4)
    assert all(count(t.input.strip()) == t.output.strip() for t in held)
    div2 = _program(TaskSpec("divisible", "identity", "sum", filter_k=2).solution())
    assert all(div2(t.input.strip()) == t.output.strip() for t in make_tests(TaskSpec("even", "identity", "sum"), random.Random(1), 4))


@pytest.mark.parametrize("seed", [0, 3])
def test_no_training_program_passes_a_validation_or_test_task(seed):
    """The issue's leak: on the old split 24 (seed 0) and 18 (seed 3) of 48 held-out tasks were passed
    by some training task's reference program. Here none is: each training solution *text* is run on
    every held-out task's tests, and compared on 400 fresh random inputs (where the held-out task's
    filter keeps a number) with the held-out task's expected output."""
    split = make_split(seed)
    programs = {p.solutions["python"][0]: _program(p.solutions["python"][0]) for p in split.train}
    specs = {p.solutions["python"][0]: TaskSpec(*p.metadata["combination"], p.metadata["filter_k"], p.metadata["transform_k"]) for p in split.train}
    rng = random.Random(f"independent-{seed}")
    battery = [[rng.randint(-9, 20) for _ in range(rng.randint(4, 8))] for _ in range(400)]
    for held in (*split.validation, *split.test):
        leaking = [code for code, run in programs.items() if _passes(run, held)]
        assert not leaking, (held.id, leaking[:1])
        h = TaskSpec(*held.metadata["combination"], held.metadata["filter_k"], held.metadata["transform_k"])
        lines = [x for x in battery if h.kept(x)]
        for code, s in specs.items():
            assert any(_output(s, x) != reference_output(h, x) for x in lines), (held.id, code)


def _output(spec: TaskSpec, numbers: list[int]) -> str | None:
    try:
        return reference_output(spec, numbers)
    except ValueError:  # max/min of nothing: the program crashes
        return None


def test_problems_are_valid_synthetic_problems_with_several_tests():
    split = make_split(0, n_tests=5)
    for p in (*split.train[:20], *split.validation, *split.test):
        assert isinstance(p, Problem)
        assert p.source == "synthetic" and p.split in ("train", "validation", "test")
        assert len(p.all_tests()) == 5 and len(p.public_tests) == 1
        assert len({t.input for t in p.all_tests()}) == 5  # distinct random inputs
        assert p.solutions["python"][0] in p.solutions["python"]


def test_reference_solution_text_agrees_with_the_independent_reference_implementation():
    """The solution text is run as a real program; the expected outputs come from reference_output."""
    split = make_split(0)
    rng = random.Random(0)
    sample = rng.sample(split.train, 15) + split.validation[:5] + split.test[:5]
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


def test_too_many_heldout_tasks_is_rejected_clearly():
    with pytest.raises(ValueError, match="n_heldout"):
        make_task_specs(0, n_validation=200, n_test=48)
