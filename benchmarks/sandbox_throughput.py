"""Sandbox throughput: tests/second of the engine against a fresh process per test.

    .venv/bin/python benchmarks/sandbox_throughput.py [--tests 400] [--problems 40] [--workers N] [--no-baseline]

Workloads, each also run by the baseline on the same cores in the same run:
  (a) a trivial Python stdin program over --tests tests;
  (b) real CodeContests problems (../shared/data/code_contests/train.jsonl): the first --problems
      problems' Python 3 reference solutions on all their tests, judged as a batch (run_many);
  (c) a C++ stdin program over --tests tests.
Baseline: ``subprocess.run([python3, main.py])`` (or the compiled binary, compiled once) per test,
stdin from a file, no isolation, a thread pool of one process per core. The engine runs with the
result cache off, so every test really executes. Timings are noisy on a shared machine: rerun.
"engine CPU ms/test" is the CPU time of the whole engine (this process, its workers, their zygotes
and the programs) per test, which load from other jobs disturbs far less than tests/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.local import LocalExecutor  # noqa: E402
from sandbox.spec import RunRequest, TestCase  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PYTHON3 = os.path.join(sys.base_prefix, "bin", "python3")  # the interpreter itself, not the venv wrapper

TRIVIAL_PY = "a, b = map(int, input().split())\nprint(a + b)\n"
TRIVIAL_CPP = "#include <cstdio>\nint main() { long long a, b; scanf(\"%lld %lld\", &a, &b); printf(\"%lld\\n\", a + b); }\n"


SKIP_BASELINE = False


def baseline(argv: list[str], inputs: list[str], workers: int, workdir: str) -> float:
    """Seconds to run argv once per input, fresh process each time, stdin from a file."""
    if SKIP_BASELINE:
        return float("nan")
    paths = []
    for i, text in enumerate(inputs):
        p = os.path.join(workdir, f"in{i}.txt")
        with open(p, "w") as f:
            f.write(text)
        paths.append(p)

    def one(path: str) -> int:
        with open(path, "rb") as stdin:
            return subprocess.run(argv, stdin=stdin, capture_output=True, timeout=60).returncode

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - t0


def tree_cpu_s() -> float:
    """CPU seconds of this process and every live descendant, including the children they reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    t = os.times()
    total = t.user + t.system
    todo, seen = [os.getpid()], set()
    while todo:
        pid = todo.pop()
        kids = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):  # children belong to the thread that made them
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids += [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            if k in seen:
                continue
            seen.add(k)
            try:
                with open(f"/proc/{k}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
            except OSError:
                pass
            todo.append(k)
    return total


def report(name: str, n: int, engine_s: float, base_s: float, extra: str = "", cpu_s: float | None = None) -> None:
    e, b = n / engine_s, n / base_s
    cpu = f"  engine CPU {1000 * cpu_s / n:6.2f} ms/test" if cpu_s is not None else ""
    print(f"{name:<34} {n:>5} tests  engine {e:8.1f} tests/s  baseline {b:8.1f} tests/s  ratio {e / b:6.1f}x{cpu} {extra}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=400)
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-baseline", action="store_true", help="Engine figures only (for interleaved before/after runs).")
    args = ap.parse_args()
    global SKIP_BASELINE
    SKIP_BASELINE = args.no_baseline
    workers = args.workers or os.cpu_count() or 1
    print(f"cores: {os.cpu_count()}  workers: {workers}  load average: {os.getloadavg()[0]:.1f}")
    tmp = tempfile.mkdtemp(prefix="codealign-bench-")
    with LocalExecutor(workers=workers, cache_size=0, bin_cache=os.path.join(tmp, "bin")) as ex:
        print(f"isolation: {ex.run(RunRequest(code='print(1)', tests=[TestCase(input='', output='1')])) and ex.isolation}")

        # (a) trivial Python over N tests
        tests = [TestCase(input=f"{i} {i + 1}\n", output=str(2 * i + 1)) for i in range(args.tests)]
        c0, t0 = tree_cpu_s(), time.perf_counter()
        r = ex.run(RunRequest(code=TRIVIAL_PY, tests=tests))
        eng, cpu = time.perf_counter() - t0, tree_cpu_s() - c0
        assert r.passed == len(tests), r.verdict
        src = os.path.join(tmp, "main.py")
        Path(src).write_text(TRIVIAL_PY)
        base = baseline([PYTHON3, src], [t.input for t in tests], workers, tmp)
        report("(a) python trivial stdin", len(tests), eng, base, cpu_s=cpu)

        # (b) real CodeContests problems, reference solutions, all tests
        path = DATA / "code_contests" / "train.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.open()][: args.problems]
            reqs, progs = [], []
            for row in rows:
                ts = [TestCase(input=i, output=o) for k in ("public_tests", "private_tests", "generated_tests")
                      for i, o in zip(row[k]["input"], row[k]["output"])]
                code = row["solutions"]["solution"][0]
                reqs.append(RunRequest(code=code, tests=ts, time_limit_s=10, checker="codecontests"))
                progs.append((code, [t.input for t in ts]))
            n = sum(len(q.tests) for q in reqs)
            c0, t0 = tree_cpu_s(), time.perf_counter()
            res = ex.run_many(reqs)
            eng, cpu = time.perf_counter() - t0, tree_cpu_s() - c0
            accepted = sum(x.passed for x in res)
            base = 0.0
            for k, (code, inputs) in enumerate(progs):  # one file per program, a process per test
                src = os.path.join(tmp, f"cc{k}.py")
                Path(src).write_text(code)
                base += baseline([PYTHON3, src], inputs, workers, tmp)
            report(f"(b) codecontests, {len(reqs)} problems", n, eng, base, f"({accepted}/{n} tests AC)", cpu_s=cpu)
        else:
            print(f"(b) skipped: {path} not found")

        # (c) C++ over N tests (compiled once)
        before = ex.stats()["compiles"].get("cpp", 0)
        t0 = time.perf_counter()
        r = ex.run(RunRequest(language="cpp", code=TRIVIAL_CPP, tests=tests))
        eng = time.perf_counter() - t0
        assert r.passed == len(tests), (r.verdict, r.compile_output)
        compiles = ex.stats()["compiles"]["cpp"] - before
        c0, t0 = tree_cpu_s(), time.perf_counter()
        r2 = ex.run(RunRequest(language="cpp", code=TRIVIAL_CPP, tests=tests))
        eng_warm, cpu = time.perf_counter() - t0, tree_cpu_s() - c0
        assert ex.stats()["compiles"]["cpp"] - before == 1 and r2.passed == len(tests)
        src = os.path.join(tmp, "main.cpp")
        Path(src).write_text(TRIVIAL_CPP)
        t0 = time.perf_counter()
        subprocess.run(["g++", "-std=c++17", "-O2", "-o", os.path.join(tmp, "a.out"), src], check=True)
        compile_s = time.perf_counter() - t0
        base = baseline([os.path.join(tmp, "a.out")], [t.input for t in tests], workers, tmp)
        report("(c) c++ incl. its one compile", len(tests), eng, base + compile_s,
               f"(engine compiles: {compiles} for {2 * len(tests)} tests over 2 requests)")
        report("(c) c++ binary cached", len(tests), eng_warm, base, "(baseline: binary per test, no compile)", cpu_s=cpu)
        print(f"    a compile per test (as a peer does) would cost ~{compile_s * len(tests):.0f} s for these "
              f"{len(tests)} tests: {len(tests) / (compile_s * len(tests) + base):.1f} tests/s")
        print(f"stats: {json.dumps(ex.stats())}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
