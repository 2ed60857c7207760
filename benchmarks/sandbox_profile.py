"""Where a sandbox test's CPU goes: the engine's process tree split by role, per test.

    .venv/bin/python benchmarks/sandbox_profile.py [--tests 2000] [--rounds 3] [--workers 2]
        [--src PATH ...] [--workload trivial|fn|cpp|codecontests|java|java-cc|java-scanner] [--data DIR]

Judges one program (``--workload``: a trivial Python stdin program, a call-based Python function, a
C++ binary, or a Java program: ``java`` reads a line with BufferedReader and prints, ``java-cc`` is a
typical CodeContests solution (a BufferedReader/StringTokenizer reader, PrintWriter, collections, a
lambda), ``java-scanner`` reads with Scanner) over ``--tests`` tests in one request, or
(``codecontests``) the Python 3 reference solutions of real CodeContests problems
(``--data``/code_contests/train.jsonl) on all their tests until at least ``--tests`` tests, in one
batch, through ``LocalExecutor`` (result cache off) and
prints, per test: the CPU time of the executor (this process: queue, framing, checker), the workers'
managers (preparing, draining, reporting), their zygotes (cloning) and the programs (everything from
the clone to their exit, reaped by the managers), their sum, and the programs' minor page faults
(copy-on-write of the zygote's pages dominates them). It also prints what kernel worker threads of
the whole machine spent meanwhile (deferred namespace and mount teardown lands there; other jobs on
the machine add to it, so read it as an upper bound).

``--src`` takes one or more checkouts (default: this one); with several, rounds alternate between
them in one session, so load from other jobs hits each alike: that is the way to measure a change
(``git worktree add /tmp/base <commit>`` and pass ``--src /tmp/base .``). CPU time is the figure to
compare; tests/s depends on what else the machine runs (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DATA = HERE.parent / "shared" / "data"

# Runs inside a fresh interpreter with the checkout under test first on sys.path.
CHILD = textwrap.dedent(r'''
    import json, os, sys, time
    sys.path.insert(0, SRC)
    from sandbox.local import LocalExecutor
    from sandbox.spec import RunRequest, TestCase

    TICK = os.sysconf("SC_CLK_TCK")

    def stat(pid):
        with open(f"/proc/{pid}/stat") as f:
            x = f.read().rsplit(")", 1)[1].split()
        # minflt cminflt utime stime cutime cstime
        return int(x[7]), int(x[8]), (int(x[11]) + int(x[12])) / TICK, (int(x[13]) + int(x[14])) / TICK

    def children(pid):
        out = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(k) for k in f.read().split()]
        return out

    def kworkers():
        total = 0.0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            if "(kworker" in s or "(rcu" in s or "(ksoftirqd" in s:
                x = s.rsplit(")", 1)[1].split()
                total += (int(x[11]) + int(x[12])) / TICK
        return total

    PY = "a, b = map(int, input().split())\nprint(a + b)\n"
    FN = "def add(a, b):\n    return a + b\n"
    CPP = "#include <cstdio>\nint main() { long long a, b; scanf(\"%lld %lld\", &a, &b); printf(\"%lld\\n\", a + b); }\n"
    JAVA = """import java.io.*;

    public class Main {
        public static void main(String[] args) throws IOException {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            String[] p = in.readLine().trim().split(" ");
            System.out.println(Long.parseLong(p[0]) + Long.parseLong(p[1]));
        }
    }
    """
    JAVA_CC = """import java.io.*;
    import java.util.*;

    public class Main {
        static class FastReader {
            BufferedReader br = new BufferedReader(new InputStreamReader(System.in));
            StringTokenizer st;

            String next() throws IOException {
                while (st == null || !st.hasMoreTokens()) st = new StringTokenizer(br.readLine());
                return st.nextToken();
            }

            long nextLong() throws IOException { return Long.parseLong(next()); }
        }

        public static void main(String[] args) throws IOException {
            FastReader in = new FastReader();
            PrintWriter out = new PrintWriter(new BufferedWriter(new OutputStreamWriter(System.out)));
            long a = in.nextLong(), b = in.nextLong();
            List<Long> xs = new ArrayList<>(Arrays.asList(a, b));
            xs.sort((x, y) -> Long.compare(y, x));
            Map<Long, Integer> seen = new HashMap<>();
            for (long x : xs) seen.merge(x, 1, Integer::sum);
            long[] arr = {a, b};
            Arrays.sort(arr);
            out.println(arr[0] + arr[1]);
            out.flush();
        }
    }
    """
    JAVA_SCANNER = """import java.util.*;

    public class Main {
        public static void main(String[] args) {
            Scanner sc = new Scanner(System.in);
            long a = sc.nextLong(), b = sc.nextLong();
            TreeMap<Long, Integer> m = new TreeMap<>();
            m.put(a, 1);
            m.put(b, 2);
            System.out.println("" + (m.firstKey() + m.lastKey()));
        }
    }
    """
    SOURCES = {"trivial": ("python", PY), "cpp": ("cpp", CPP), "java": ("java", JAVA), "java-cc": ("java", JAVA_CC),
               "java-scanner": ("java", JAVA_SCANNER)}
    n = N
    reqs = None
    if WORKLOAD == "codecontests":  # real problems: the Python 3 reference solutions on all their tests
        reqs = []
        with open(os.path.join(DATA, "code_contests", "train.jsonl")) as f:
            for line in f:
                row = json.loads(line)
                sols = [c for lang, c in zip(row["solutions"]["language"], row["solutions"]["solution"]) if lang == 3]
                if not sols:
                    continue
                ts = [TestCase(input=i, output=o) for k in ("public_tests", "private_tests", "generated_tests")
                      for i, o in zip(row[k]["input"], row[k]["output"])]
                reqs.append(RunRequest(code=sols[0], tests=ts, time_limit_s=10, checker="codecontests"))
                if sum(len(q.tests) for q in reqs) >= n:
                    break
        n = sum(len(q.tests) for q in reqs)
        req = reqs[0]
    elif WORKLOAD == "fn":
        req = RunRequest(code=FN, fn_name="add", tests=[TestCase(input=[i, i + 1], output=2 * i + 1) for i in range(n)])
    else:
        language, code = SOURCES[WORKLOAD]
        req = RunRequest(language=language, code=code,
                         tests=[TestCase(input=f"{i} {i + 1}\n", output=str(2 * i + 1)) for i in range(n)])
    with LocalExecutor(workers=WORKERS, cache_size=0) as ex:
        from sandbox import languages
        if req.language == "java" and hasattr(languages, "java_archive"):
            languages.java_archive(ex.bin_cache, wait=True)  # the steady state: the JVM's class-data archive built
        warm = req.model_copy(update={"tests": req.tests[:2 * WORKERS]})
        assert ex.run(warm).passed == 2 * WORKERS
        managers = [s.proc.pid for s in ex._slots]
        zygotes = [children(m)[0] for m in managers]

        def snap():
            t = os.times()
            m, z = [stat(p) for p in managers], [stat(p) for p in zygotes]
            return {"executor": t.user + t.system, "managers": sum(x[2] for x in m), "zygotes": sum(x[2] for x in z),
                    "programs": sum(x[3] for x in m), "faults": sum(x[1] for x in m), "kworkers": kworkers(),
                    "wall": time.perf_counter()}

        a = snap()
        if reqs is None:
            r = ex.run(req)
            assert r.passed == n, (r.verdict, r.tests[0])
        else:
            ex.run_many(reqs)
        b = snap()
    print(json.dumps({**{k: b[k] - a[k] for k in a}, "tests": n}))
''')


def measure(src: str, n: int, workers: int, workload: str, data: str) -> dict:
    code = f"SRC = {src!r}\nN = {n}\nWORKERS = {workers}\nWORKLOAD = {workload!r}\nDATA = {data!r}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=src)
    if out.returncode != 0:
        raise SystemExit(f"{src}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=None, help="tests per round (default 2000; 300 for Java)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workload", choices=("trivial", "fn", "cpp", "codecontests", "java", "java-cc", "java-scanner"),
                    default="trivial")
    ap.add_argument("--data", default=str(DATA), help="directory with code_contests/train.jsonl (codecontests workload)")
    ap.add_argument("--src", nargs="+", default=[str(HERE)], help="checkouts to compare (alternated)")
    args = ap.parse_args()
    srcs = [str(Path(s).resolve()) for s in args.src]
    tests = args.tests or (300 if args.workload.startswith("java") else 2000)
    print(f"{args.workload} workload, {tests} tests per round, {args.workers} workers, load average "
          f"{os.getloadavg()[0]:.1f}; per test: ms of CPU by role, faults of the program")
    rows: dict[str, list[dict]] = {s: [] for s in srcs}
    for i in range(args.rounds):
        for s in srcs:
            d = measure(s, tests, args.workers, args.workload, args.data)
            rows[s].append(d)
            n = d["tests"]
            ms = {k: 1000 * d[k] / n for k in ("executor", "managers", "zygotes", "programs", "kworkers")}
            total = ms["executor"] + ms["managers"] + ms["zygotes"] + ms["programs"]
            print(f"round {i + 1} {s}: executor {ms['executor']:.2f}  managers {ms['managers']:.2f}  zygotes "
                  f"{ms['zygotes']:.2f}  programs {ms['programs']:.2f}  = {total:.2f} ms/test  "
                  f"(+ kworkers {ms['kworkers']:.2f})  faults {d['faults'] / n:.0f}/test  {n / d['wall']:.0f} tests/s  "
                  f"load {os.getloadavg()[0]:.1f}")
    if args.rounds > 1:
        for s in srcs:
            tot = [1000 * (d["executor"] + d["managers"] + d["zygotes"] + d["programs"]) / d["tests"] for d in rows[s]]
            rate = [d["tests"] / d["wall"] for d in rows[s]]
            print(f"median {s}: {statistics.median(tot):.2f} ms/test CPU, {statistics.median(rate):.0f} tests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
