"""``benchmarks/tiny_warm_start.py``'s per-part accuracy: which of a synthetic task's three parts
(filter, transform, aggregate) a sampled program gets right, against the task's reference program."""

import importlib.util
from pathlib import Path

import pytest

from codealign.synthetic_tasks import TaskSpec, make_split, to_problem

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "tiny_warm_start.py"


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("tiny_warm_start", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parts_reads_every_task_of_the_family(mod):
    split = make_split(0)
    for problem in split.train[:50] + split.validation + split.test:
        got = mod.parts(problem.solutions["python"][0])
        assert got is not None and got["aggregate"].startswith("print("), problem.id


def test_part_accuracy_counts_each_part_apart(mod):
    task = to_problem(TaskSpec("greater", "add", "sum", filter_k=3, transform_k=2), "validation", [])
    right = task.solutions["python"][0]
    wrong_k = TaskSpec("greater", "add", "sum", filter_k=4, transform_k=2).solution()  # filter differs only in K
    wrong_agg = TaskSpec("greater", "add", "max", filter_k=3, transform_k=2).solution()
    no_filter = TaskSpec("all", "add", "sum", transform_k=2).solution()
    pairs = [(task, right), (task, wrong_k), (task, wrong_agg), (task, no_filter), (task, "print(5)\n"), (task, None)]
    acc = mod.part_accuracy(pairs)
    n = len(pairs)
    assert acc == {"filter": 2 / n, "transform": 4 / n, "aggregate": 3 / n, "all": 1 / n, "other_shape": 2 / n}
