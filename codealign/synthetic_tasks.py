"""A generated family of small stdin/stdout programming tasks: the embedded set ``codealign train`` learns on.

A tiny model trained from scratch on CPU cannot solve APPS, so the offline default trains on a family
of list-processing tasks that a ~1M-parameter model can learn in a minute, yet that still need a real
program judged against real tests. Every task reads one line of integers and composes three parts::

    Read integers from a line. Keep those greater than 3. Square each. Print the sum.

    a = list(map(int, input().split()))
    b = [x * x for x in a if x > 3]
    print(sum(b))

* a **filter** (keep all / even / odd / positive / negative / greater than K / less than K /
  divisible by K),
* a **transform** (identity / square / add K / subtract K / multiply by K / absolute value / negate /
  modulo K),
* an **aggregate** (sum / maximum / minimum / count / all in order / sorted / reversed).

Expected outputs come from :func:`reference_output`, a direct Python implementation of the three
parts, independent of the solution text (the tests check that both agree by running the solution).
Test inputs are random, and drawn so that the filter keeps at least one number (so "maximum" is
defined and an empty answer never passes by accident).

The split (see :func:`make_tasks`): a fixed, seeded subset of (filter, transform, aggregate)
*combinations* is held out. No held-out combination ever appears in training, while every single
filter, transform and aggregate does (the split is drawn so). Solving a held-out task therefore
demands *compositional* generalisation: putting known parts together in a way never seen in training.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from sandbox.spec import TestCase

#: Bump when statements, solutions or test generation change, so cached warm starts are rebuilt.
TASKS_VERSION = 2

# name -> (statement sentence with {k}, code condition with {k}, predicate(x, k)); "" = keep all.
FILTERS: dict[str, tuple[str, str, Callable[[int, int], bool]]] = {
    "all": ("", "", lambda x, k: True),
    "even": ("Keep the even ones. ", "x % 2 == 0", lambda x, k: x % 2 == 0),
    "odd": ("Keep the odd ones. ", "x % 2 == 1", lambda x, k: x % 2 == 1),
    "positive": ("Keep the positive ones. ", "x > 0", lambda x, k: x > 0),
    "negative": ("Keep the negative ones. ", "x < 0", lambda x, k: x < 0),
    "greater": ("Keep those greater than {k}. ", "x > {k}", lambda x, k: x > k),
    "less": ("Keep those less than {k}. ", "x < {k}", lambda x, k: x < k),
    "divisible": ("Keep those divisible by {k}. ", "x % {k} == 0", lambda x, k: x % k == 0),
}

# name -> (statement sentence with {k}, code expression with {k}, function(x, k))
TRANSFORMS: dict[str, tuple[str, str, Callable[[int, int], int]]] = {
    "identity": ("", "x", lambda x, k: x),
    "square": ("Square each. ", "x * x", lambda x, k: x * x),
    "add": ("Add {k} to each. ", "x + {k}", lambda x, k: x + k),
    "subtract": ("Subtract {k} from each. ", "x - {k}", lambda x, k: x - k),
    "multiply": ("Multiply each by {k}. ", "x * {k}", lambda x, k: x * k),
    "abs": ("Take the absolute value of each. ", "abs(x)", lambda x, k: abs(x)),
    "negate": ("Negate each. ", "-x", lambda x, k: -x),
    "modulo": ("Take each modulo {k}. ", "x % {k}", lambda x, k: x % k),
}

# name -> (statement sentence, final code line, function(list) -> output text)
AGGREGATES: dict[str, tuple[str, str, Callable[[list[int]], str]]] = {
    "sum": ("Print the sum.", "print(sum(b))", lambda b: str(sum(b))),
    "max": ("Print the maximum.", "print(max(b))", lambda b: str(max(b))),
    "min": ("Print the minimum.", "print(min(b))", lambda b: str(min(b))),
    "count": ("Print the count.", "print(len(b))", lambda b: str(len(b))),
    "list": ("Print them in order.", "print(*b)", lambda b: " ".join(map(str, b))),
    "sorted": ("Print them in increasing order.", "print(*sorted(b))", lambda b: " ".join(map(str, sorted(b)))),
    "reversed": ("Print them in reverse order.", "print(*b[::-1])", lambda b: " ".join(map(str, b[::-1]))),
}

#: Parameters K used in statements; single digits keep the numbers one token each. Four values, not
#: eight: copying K from the statement is what a freshly SFT'd tiny model fails most, and with eight
#: values training tasks passed too rarely (~5% at temperature 1) to give rewards any signal.
K_VALUES = range(2, 6)
#: Input numbers are drawn from this closed range; lists have between these many numbers.
VALUE_RANGE = (-9, 20)
LENGTH_RANGE = (4, 8)


@dataclass(frozen=True)
class TaskSpec:
    """One task: a filter, a transform and an aggregate, with their parameters (0 when unused)."""

    filter: str
    transform: str
    aggregate: str
    filter_k: int = 0
    transform_k: int = 0

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.filter, self.transform, self.aggregate)

    @property
    def task_id(self) -> str:
        f = self.filter + (str(self.filter_k) if "{k}" in FILTERS[self.filter][1] else "")
        t = self.transform + (str(self.transform_k) if "{k}" in TRANSFORMS[self.transform][1] else "")
        return f"{f}-{t}-{self.aggregate}"

    def statement(self) -> str:
        """The problem statement: one short sentence per part."""
        return (
            "Read integers from a line. "
            + FILTERS[self.filter][0].format(k=self.filter_k)
            + TRANSFORMS[self.transform][0].format(k=self.transform_k)
            + AGGREGATES[self.aggregate][0]
        )

    def solution(self) -> str:
        """The reference solution (Python source, newline-terminated)."""
        cond = FILTERS[self.filter][1].format(k=self.filter_k)
        expr = TRANSFORMS[self.transform][1].format(k=self.transform_k)
        comp = f"[{expr} for x in a if {cond}]" if cond else f"[{expr} for x in a]"
        return f"a = list(map(int, input().split()))\nb = {comp}\n{AGGREGATES[self.aggregate][1]}\n"

    def kept(self, numbers: list[int]) -> list[int]:
        """The transformed numbers the aggregate sees."""
        keep, apply = FILTERS[self.filter][2], TRANSFORMS[self.transform][2]
        return [apply(x, self.transform_k) for x in numbers if keep(x, self.filter_k)]


def reference_output(spec: TaskSpec, numbers: list[int]) -> str:
    """The expected stdout (without trailing newline) of ``spec`` on one input line of ``numbers``."""
    return AGGREGATES[spec.aggregate][2](spec.kept(numbers))


def make_tests(spec: TaskSpec, rng: random.Random, n_tests: int) -> list[TestCase]:
    """``n_tests`` random inputs (distinct, each keeping at least one number) with expected outputs."""
    tests: list[TestCase] = []
    seen: set[str] = set()
    while len(tests) < n_tests:
        numbers = [rng.randint(*VALUE_RANGE) for _ in range(rng.randint(*LENGTH_RANGE))]
        line = " ".join(map(str, numbers))
        if not spec.kept(numbers) or line in seen:
            continue
        seen.add(line)
        tests.append(TestCase(input=line + "\n", output=reference_output(spec, numbers) + "\n"))
    return tests


def _uses_k(template: str) -> bool:
    return "{k}" in template


def all_combinations() -> list[tuple[str, str, str]]:
    """Every (filter, transform, aggregate) combination of the family, in a fixed order."""
    return list(itertools.product(FILTERS, TRANSFORMS, AGGREGATES))


def split_combinations(seed: int, heldout_fraction: float) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Split the combinations into (train, held-out), every single part still present in training.

    Drawn with ``random.Random(seed)``; redrawn (deterministically) until each filter, transform and
    aggregate appears in at least one training combination.
    """
    if not 0 < heldout_fraction <= 0.5:
        raise ValueError(f"heldout_fraction must be in (0, 0.5] so training keeps most combinations, got {heldout_fraction}")
    combos = all_combinations()
    n_heldout = max(1, round(heldout_fraction * len(combos)))
    rng = random.Random(f"split-{seed}")
    for _ in range(1000):
        heldout = set(rng.sample(combos, n_heldout))
        train = [c for c in combos if c not in heldout]
        if all({c[i] for c in train} == set(parts) for i, parts in enumerate((FILTERS, TRANSFORMS, AGGREGATES))):
            return train, [c for c in combos if c in heldout]
    raise RuntimeError("could not split the combinations so that training covers every part")


def _specs_for(combo: tuple[str, str, str], rng: random.Random, count: int) -> list[TaskSpec]:
    """Up to ``count`` distinct tasks of one combination (fewer when it has fewer parameter choices)."""
    f, t, a = combo
    fks = list(K_VALUES) if _uses_k(FILTERS[f][1]) else [0]
    tks = list(K_VALUES) if _uses_k(TRANSFORMS[t][1]) else [0]
    choices = [TaskSpec(f, t, a, fk, tk) for fk in fks for tk in tks]
    return rng.sample(choices, min(count, len(choices)))


def make_task_specs(
    seed: int = 0, *, per_train_combination: int = 3, n_heldout: int = 48, heldout_fraction: float = 0.15
) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """(train, held-out) task specs: see :func:`make_tasks`."""
    train_combos, heldout_combos = split_combinations(seed, heldout_fraction)
    rng = random.Random(f"tasks-{seed}")
    train = [s for c in train_combos for s in _specs_for(c, rng, per_train_combination)]
    rng.shuffle(train)
    picked = rng.sample(heldout_combos, min(n_heldout, len(heldout_combos)))
    heldout = [_specs_for(c, rng, 1)[0] for c in picked]
    return train, heldout


def to_problem(spec: TaskSpec, split: str, tests: list[TestCase]):
    """A :class:`codealign.problems.Problem` for ``spec``: the first test public, the rest private."""
    from codealign.problems import Problem

    return Problem(
        id=f"synthetic/{spec.task_id}",
        source="synthetic",
        split=split,
        statement=spec.statement(),
        starter_code="",
        fn_name=None,
        public_tests=tests[:1],
        private_tests=tests[1:],
        generated_tests=[],
        time_limit_s=2.0,
        memory_limit_mb=256,
        # the number of parts the statement spells out (1 to 3)
        difficulty=str(1 + (spec.filter != "all") + (spec.transform != "identity")),
        solutions={"python": [spec.solution()]},
        incorrect_solutions={},
        checker="tokens",
        metadata={"combination": list(spec.combination), "filter_k": spec.filter_k, "transform_k": spec.transform_k},
    )


def make_tasks(
    seed: int = 0,
    *,
    per_train_combination: int = 3,
    n_heldout: int = 48,
    n_tests: int = 4,
    heldout_fraction: float = 0.15,
):
    """The embedded task set: ``(train, heldout)`` lists of :class:`codealign.problems.Problem`
    (``split`` labels ``"train"`` and ``"test"``: the held-out tasks are the evaluation split).

    Deterministic given ``seed``. 448 combinations exist (8 filters x 8 transforms x 7 aggregates);
    ``heldout_fraction`` of them are held out. Training gets up to ``per_train_combination`` tasks
    (distinct parameters K) of each remaining combination; held-out gets one task from each of
    ``n_heldout`` held-out combinations. Each task has ``n_tests`` random tests.
    """
    train_specs, heldout_specs = make_task_specs(
        seed, per_train_combination=per_train_combination, n_heldout=n_heldout, heldout_fraction=heldout_fraction
    )
    rng = random.Random(f"tests-{seed}")
    train = [to_problem(s, "train", make_tests(s, rng, n_tests)) for s in train_specs]
    heldout = [to_problem(s, "test", make_tests(s, rng, n_tests)) for s in heldout_specs]
    return train, heldout


def split_problems(split: str = "test", seed: int = 0) -> list:
    """One split of the family exactly as ``codealign train`` draws it (:func:`make_tasks` with its
    defaults): ``"train"``, or ``"test"``, the held-out evaluation split (``"heldout"`` is the same).

    Selects by each problem's ``split`` label, so it follows :func:`make_tasks` whatever splits it makes.
    """
    wanted = "test" if split in ("heldout", "held-out") else split
    problems = [p for group in make_tasks(seed) for p in group]
    chosen = [p for p in problems if p.split == wanted]
    if not chosen:
        raise ValueError(f"the synthetic task family has no split {split!r}; use one of {sorted({p.split for p in problems})}")
    return chosen
