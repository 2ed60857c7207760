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

The split (:func:`make_split`, the one function every user of the family calls): training,
validation and test tasks. A seeded set of (filter, transform, aggregate) *combinations* is held out
(validation and test), none of which ever appears in training, while every single filter, transform
and aggregate does. Solving a held-out task therefore demands *compositional* generalisation: putting
known parts together in a way never seen in training. And no held-out task can be passed by
recalling a training program: the reference program of every training combination, with any K, fails
its tests and disagrees with it on a battery of random inputs (the no-leak check below).
Tune on ``validation``; report ``test``.
"""

from __future__ import annotations

import collections
import functools
import itertools
import random
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np

from sandbox.spec import TestCase

#: Bump when statements, solutions, tests or the split change (3: train / validation / test split with
#: the no-leak check).
TASKS_VERSION = 3

T = TypeVar("T")

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
        numbers = _random_line(rng)
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


def variants(combo: tuple[str, str, str]) -> list[TaskSpec]:
    """Every parameterisation of a combination (each K its filter and transform use), in a fixed order."""
    f, t, a = combo
    fks = list(K_VALUES) if _uses_k(FILTERS[f][1]) else [0]
    tks = list(K_VALUES) if _uses_k(TRANSFORMS[t][1]) else [0]
    return [TaskSpec(f, t, a, fk, tk) for fk in fks for tk in tks]


# -- the no-leak check ------------------------------------------------------------------------------
#
# A held-out task leaks when the reference program of some training task passes it: "Print the count"
# ignores the transform, "divisible by 2" is "even", "absolute value" of positives is the identity...
# A policy that only memorised training programs would score on such a task. The split below keeps a
# held-out task only if *no* parameterisation of *any* training combination (a superset of the
# training tasks: the policy is taught to copy K from the statement) agrees with it on a battery of
# random inputs, and only with tests that every such program fails.


def _random_line(rng: random.Random) -> list[int]:
    return [rng.randint(*VALUE_RANGE) for _ in range(rng.randint(*LENGTH_RANGE))]


#: Random inputs (the tests' distribution) on which held-out tasks are compared with training programs.
BATTERY_SIZE = 256
#: A training program that agrees with a held-out task on more than this fraction of the battery
#: nearly solves it (e.g. "keep those greater than 5, add 3, maximum" vs "add 3, maximum": they differ
#: only when no number exceeds 5); such a task is not held out. Measured: 1.0 left held-out tasks
#: whose 4 random tests every such program passes ~94% of the time, so their tests had to be hand-picked.
MAX_AGREEMENT = 0.9


@functools.lru_cache(maxsize=1)
def _battery() -> tuple[tuple[int, ...], ...]:
    rng = random.Random("battery")
    lines: dict[tuple[int, ...], None] = {}  # distinct, in drawing order
    while len(lines) < BATTERY_SIZE:
        lines[tuple(_random_line(rng))] = None
    return tuple(lines)


def _program_output(spec: TaskSpec, kept: list[int]) -> str | None:
    """What ``spec``'s reference program prints for these kept numbers; None when it crashes (max of nothing)."""
    try:
        return AGGREGATES[spec.aggregate][2](kept)
    except ValueError:
        return None


class _Outputs:
    """Outputs of every task variant of the family on a list of inputs, as interned ids (one row per variant)."""

    def __init__(self, inputs: Sequence[Sequence[int]]):
        self.specs = [v for c in all_combinations() for v in variants(c)]
        self.row = {s: i for i, s in enumerate(self.specs)}
        ids: dict[str | None, int] = {}
        table = np.empty((len(self.specs), len(inputs)), dtype=np.int32)
        for j, numbers in enumerate(inputs):
            kept: dict[tuple, list[int]] = {}  # filter + transform are shared by the 7 aggregates
            for i, s in enumerate(self.specs):
                key = (s.filter, s.filter_k, s.transform, s.transform_k)
                if key not in kept:
                    kept[key] = s.kept(list(numbers))
                table[i, j] = ids.setdefault(_program_output(s, kept[key]), len(ids))
        self.table = table
        self.inputs = inputs
        self._keeps: dict[tuple[str, int], np.ndarray] = {}

    def keeps(self, spec: TaskSpec) -> np.ndarray:
        """Which inputs ``spec``'s filter keeps a number of (the only inputs its tests use)."""
        key = (spec.filter, spec.filter_k)
        if key not in self._keeps:
            self._keeps[key] = np.array([bool(spec.kept(list(x))) for x in self.inputs])
        return self._keeps[key]

    def agreement(self, spec: TaskSpec) -> np.ndarray:
        """Per variant, the fraction of the inputs ``spec``'s filter keeps a number of on which its
        program prints what ``spec`` expects."""
        keep = self.keeps(spec)
        agree = (self.table == self.table[self.row[spec]]) & keep
        return agree.sum(axis=1) / max(int(keep.sum()), 1)


@functools.lru_cache(maxsize=1)
def _battery_outputs() -> _Outputs:
    return _Outputs(_battery())


@dataclass(frozen=True)
class TaskSplit(Generic[T]):
    """Training, validation and test tasks (specs or problems). Validation is for tuning and model
    selection; the test split is what a run reports."""

    train: list[T]
    validation: list[T]
    test: list[T]


def split_combinations(seed: int, n_heldout: int) -> tuple[list[tuple[str, str, str]], list[tuple[TaskSpec, ...]]]:
    """(training combinations, held-out candidates): ``n_heldout`` combinations taken out of training,
    each with its parameterisations that no training program solves (at least one).

    Greedy, in a seeded random order: a combination moves from training to held-out when every
    filter, transform and aggregate stays in training and some parameterisation of it disagrees with
    every parameterisation of every remaining training combination on more than ``1 - MAX_AGREEMENT``
    of the battery. Training only shrinks afterwards, so an accepted combination stays leak-free.
    """
    combos = all_combinations()
    if not 0 < n_heldout <= len(combos) // 2:
        raise ValueError(f"n_heldout must be in 1..{len(combos) // 2} so training keeps most combinations, got {n_heldout}")
    outputs = _battery_outputs()
    index = {c: i for i, c in enumerate(combos)}
    combo_of_row = np.array([index[s.combination] for s in outputs.specs])
    in_train = np.ones(len(combos), dtype=bool)
    uses = {i: collections.Counter(c[i] for c in combos) for i in range(3)}
    held: list[tuple[TaskSpec, ...]] = []
    for ci in random.Random(f"split-{seed}").sample(range(len(combos)), len(combos)):
        if len(held) == n_heldout:
            break
        combo = combos[ci]
        if any(uses[i][part] == 1 for i, part in enumerate(combo)):
            continue  # the last training combination with this part
        in_train[ci] = False
        ok = tuple(v for v in variants(combo) if not in_train[combo_of_row[outputs.agreement(v) > MAX_AGREEMENT]].any())
        if not ok:
            in_train[ci] = True
            continue
        held.append(ok)
        for i, part in enumerate(combo):
            uses[i][part] -= 1
    if len(held) < n_heldout:
        raise RuntimeError(f"only {len(held)} leak-free held-out combinations exist for seed {seed}; ask for fewer")
    return [c for ci, c in enumerate(combos) if in_train[ci]], held


def make_task_specs(
    seed: int = 0, *, per_train_combination: int = 3, n_validation: int = 48, n_test: int = 48
) -> TaskSplit[TaskSpec]:
    """Task specs of the split: see :func:`make_split`."""
    train_combos, held = split_combinations(seed, n_validation + n_test)
    rng = random.Random(f"tasks-{seed}")
    train = [s for c in train_combos for s in rng.sample(variants(c), min(per_train_combination, len(variants(c))))]
    rng.shuffle(train)
    picked = [rng.choice(ok) for ok in held]
    return TaskSplit(train, picked[n_test:], picked[:n_test])


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


def heldout_tests(spec: TaskSpec, training: Sequence[tuple[str, str, str]], rng: random.Random, n_tests: int) -> list[TestCase]:
    """``n_tests`` tests for a held-out task that every program of every ``training`` combination (any K)
    fails: distinct battery inputs on which the task's filter keeps a number, redrawn until no such
    program passes them all (:func:`split_combinations` made sure each one fails >= 10% of them)."""
    outputs = _battery_outputs()
    train_rows = np.array([outputs.row[v] for c in training for v in variants(c)])
    usable = np.flatnonzero(outputs.keeps(spec)).tolist()
    for _ in range(1000):
        cols = rng.sample(usable, n_tests)
        expected = outputs.table[outputs.row[spec], cols]
        if not (outputs.table[np.ix_(train_rows, cols)] == expected).all(axis=1).any():
            lines = [list(outputs.inputs[i]) for i in cols]
            return [TestCase(input=" ".join(map(str, x)) + "\n", output=reference_output(spec, x) + "\n") for x in lines]
    raise RuntimeError(f"no {n_tests} battery inputs tell {spec.task_id} from every training program")


def make_split(
    seed: int = 0, *, per_train_combination: int = 3, n_validation: int = 48, n_test: int = 48, n_tests: int = 4
) -> TaskSplit:
    """The embedded task set: training, validation and test :class:`codealign.problems.Problem` lists.

    Deterministic given ``seed``. 448 combinations exist (8
    filters x 8 transforms x 7 aggregates); ``n_validation + n_test`` of them are held out (see
    :func:`split_combinations`), one task each, and never appear in training. Training gets up to
    ``per_train_combination`` tasks (distinct K) of every other combination. Each task has ``n_tests``
    random tests; no reference program of any training combination (any K) passes all tests of a
    validation or test task, nor agrees with it on more than 90% of a battery of random inputs.
    """
    split = _make_split(seed, per_train_combination, n_validation, n_test, n_tests)
    return TaskSplit(list(split.train), list(split.validation), list(split.test))  # the caller's own lists


@functools.lru_cache(maxsize=4)  # ~1.5 s to build; a run and its evaluation ask for the same split
def _make_split(seed: int, per_train_combination: int, n_validation: int, n_test: int, n_tests: int) -> TaskSplit:
    specs = make_task_specs(seed, per_train_combination=per_train_combination, n_validation=n_validation, n_test=n_test)
    rng = random.Random(f"tests-{seed}")
    train = [to_problem(s, "train", make_tests(s, rng, n_tests)) for s in specs.train]
    training = sorted({s.combination for s in specs.train})
    held = {
        name: [to_problem(s, name, heldout_tests(s, training, rng, n_tests)) for s in getattr(specs, name)]
        for name in ("validation", "test")
    }
    return TaskSplit(train, held["validation"], held["test"])


#: Names :func:`split_problems` accepts for each split.
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test", "heldout": "test", "held-out": "test"}


def split_problems(split: str = "test", seed: int = 0) -> list:
    """One split of the family exactly as ``codealign train`` draws it (:func:`make_split` with its
    defaults), by name: ``"train"``, ``"validation"`` (``"val"``: for tuning) or ``"test"`` (the
    evaluation split; ``"heldout"`` is the same)."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"the synthetic task family has no split {split!r}; use one of train, validation, test")
    return getattr(make_split(seed), SPLIT_NAMES[split])
