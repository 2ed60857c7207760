"""Judged samples per second for `codealign eval`, with and without dedup, and the projected wall time
of `--k 1000` on CodeContests' 165-problem test split.

Real problems and tests from ../shared/data/code_contests (10 tests each). Each problem gets ``--n``
samples drawn from a pool like a model's: the reference solution, a near-miss (prints a constant), a
crash, a program with no code block, and the reference reformatted. "with dedup" judges those samples as
they are (identical programs of a problem run once); "without dedup" appends a unique comment to each
program, so neither codealign's dedup nor the sandbox's result cache can help: every sample runs.

    python benchmarks/eval_scale.py [--problems 12] [--n 40] [--workers 2] [--tests-per-problem 100] [--data DIR]

``--data`` is the directory holding code_contests/train.jsonl (default: ../shared/data beside the
checkout), so the script also runs from outside a checkout.

The projection scales the measured seconds per executed test to 165 problems x 1000 samples x
``--tests-per-problem`` tests (CodeContests' test split has far more tests per problem than the 10
kept here, mostly generated ones; the number is an assumption, pass yours), for one machine like this
one and for R sandbox replicas of the same size (work spreads evenly over replicas; the client's
round-robin does that).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from sandbox.client import make_client

from codealign.judge import judge_many
from codealign.loaders import load_problems

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def pool(problem) -> list[tuple[str | None, float]]:
    ref = problem.solutions["python"][0]
    return [
        (ref, 0.35),
        ("print(0)\n", 0.25),
        ("import sys\nx = sys.stdin.read().split()\nprint(1 // 0)\n", 0.1),
        (None, 0.1),  # no program extracted
        ("\n".join(line.rstrip() for line in ref.splitlines()) + "\n\n# tidy\n", 0.2),
    ]


def samples_for(problems, n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    pairs = []
    for p in problems:
        progs, weights = zip(*pool(p))
        pairs += [(p, c) for c in rng.choices(progs, weights, k=n)]
    return pairs


def measure(pairs, workers: int, unique: bool, stop_on_first_failure: bool = False) -> dict:
    if unique:
        pairs = [(p, None if c is None else f"{c}\n# sample {i}\n") for i, (p, c) in enumerate(pairs)]
    with make_client(workers=workers) as ex:
        start = time.perf_counter()
        results = judge_many(ex, pairs, stop_on_first_failure=stop_on_first_failure)
        elapsed = time.perf_counter() - start
    ran = {(p.id, c): r for (p, c), r in zip(pairs, results) if c is not None and r is not None}
    distinct = set(ran)
    executed_tests = sum(sum(t.verdict.value != "SKIPPED" for t in r.tests) for r in ran.values())
    return {"elapsed_s": elapsed, "samples": len(pairs), "distinct": len(distinct), "tests_run": executed_tests,
            "ac": sum(r is not None and r.verdict.value == "AC" for r in results), "missing": sum(r is None for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=12)
    ap.add_argument("--n", type=int, default=40, help="samples per problem")
    ap.add_argument("--workers", type=int, default=2, help="sandbox workers (one per core)")
    ap.add_argument("--tests-per-problem", type=int, default=100, help="assumed tests per CodeContests test-split problem")
    ap.add_argument("--replicas", default="1,4,16,64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="directory holding code_contests/train.jsonl (default: %(default)s)")
    args = ap.parse_args()
    train = args.data / "code_contests" / "train.jsonl"
    if not train.is_file():
        ap.error(f"--data {args.data}: no code_contests/train.jsonl there (pass the directory that holds code_contests/)")

    all_problems = load_problems(train)
    # Problems whose reference solution is quick and accepted keep the mix realistic and the run short.
    problems = [p for p in all_problems if p.solutions.get("python")][: args.problems * 2]
    with make_client(workers=args.workers) as ex:
        from codealign.judge import judge_references

        ok = [c.problem_id for c in judge_references(ex, problems, max_per_problem=1) if c.accepted]
    problems = [p for p in problems if p.id in ok][: args.problems]
    pairs = samples_for(problems, args.n, args.seed)
    print(f"{len(problems)} CodeContests problems ({train}), {args.n} samples each, {args.workers} sandbox workers")
    rows = {}
    modes = (("with dedup", False, False), ("without dedup", True, False), ("no dedup, stop at 1st failure", True, True))
    for name, unique, stop in modes:
        m = measure(pairs, args.workers, unique, stop)
        rows[name] = m
        print(f"{name:>29}: {m['samples']} samples ({m['distinct']} distinct programs, {m['tests_run']} test runs) "
              f"in {m['elapsed_s']:.1f} s = {m['samples'] / m['elapsed_s']:.1f} judged samples/s, "
              f"{m['tests_run'] / m['elapsed_s']:.0f} tests/s; AC {m['ac']}, unjudged {m['missing']}")
    speedup = (rows["with dedup"]["samples"] / rows["with dedup"]["elapsed_s"]) / (rows["without dedup"]["samples"] / rows["without dedup"]["elapsed_s"])
    print(f"dedup speed-up on this sample mix: {speedup:.1f}x; stopping at the first failure (no n@k, no test-case "
          f"average): {rows['without dedup']['elapsed_s'] / rows['no dedup, stop at 1st failure']['elapsed_s']:.1f}x")

    s_per_test = rows["without dedup"]["elapsed_s"] / rows["without dedup"]["tests_run"]
    distinct_share = rows["with dedup"]["distinct"] / rows["with dedup"]["samples"]
    total_tests = 165 * 1000 * args.tests_per_problem
    print(f"\nprojection for `codealign eval --k 1000` on the CodeContests test split: 165 x 1000 samples x "
          f"{args.tests_per_problem} tests = {total_tests / 1e6:.1f} M test runs, at {1 / s_per_test:.0f} tests/s per machine like this one")
    print(f"{'replicas (2 cores each)':>24} {'every sample distinct':>22} {f'{distinct_share:.0%} distinct (this mix)':>26}")
    for r in (int(x) for x in args.replicas.split(",")):
        full = total_tests * s_per_test / r
        print(f"{r:>24} {full / 3600:>20.1f} h {full * distinct_share / 3600:>24.1f} h")


if __name__ == "__main__":
    main()
