"""Do the datasets' reference solutions pass the judge? Agreement table on ../shared/data.

Every Python reference solution of CodeContests (one per problem in this copy), APPS (all of them) and
HumanEval (the canonical solutions) is judged with the dataset's own checker and limits through
``codealign.judge.judge_references``. A reference that is not AC is a disagreement; each known one is
explained in ``benchmarks/reference_disagreements.json`` (special checkers, interactive problems, broken
tests or references in the data, sandbox differences). Unexplained ones are listed and make the exit
status 1.

    python benchmarks/reference_agreement.py [--workers 2] [--sandbox-url URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
KNOWN = Path(__file__).resolve().parent / "reference_disagreements.json"
FILES = {"codecontests": "code_contests/train.jsonl", "apps": "apps/train.jsonl", "humaneval": "humaneval/HumanEval.jsonl"}


def check_key(check, counts: Counter) -> str:
    """Key of a check in the known-disagreements file: the problem id, or 'id#index' when a problem has several references."""
    return check.problem_id if counts[check.problem_id] == 1 else f"{check.problem_id}#{check.solution_index}"


def agreement(client, data_dir: Path = DATA, skip: dict[str, set[str]] | None = None) -> dict:
    """Per dataset: references, accepted, disagreements {key: verdict} and seconds taken.

    ``skip`` names problems (by dataset) not to run; they count as disagreements with verdict "skipped"
    (the test skips the known slow-Python ones, whose every run ends at the time limit).
    """
    from codealign.judge import judge_references
    from codealign.loaders import load_problems

    out = {}
    for name, rel in FILES.items():
        problems = load_problems(data_dir / rel)
        skipped = [p for p in problems if p.id in (skip or {}).get(name, set())]
        start = time.perf_counter()
        checks = judge_references(client, [p for p in problems if p not in skipped])
        counts = Counter(c.problem_id for c in checks)
        disagreements = {check_key(c, counts): (c.result.verdict.value if c.result else "none") for c in checks if not c.accepted}
        disagreements.update({p.id: "skipped" for p in skipped})
        out[name] = {
            "references": len(checks) + sum(len(p.solutions.get("python", [])) for p in skipped),
            "accepted": sum(c.accepted for c in checks),
            "disagreements": disagreements,
            "seconds": time.perf_counter() - start,
        }
    return out


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    from sandbox.client import make_client

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sandbox-url", default=None)
    args = ap.parse_args()
    known = json.loads(KNOWN.read_text())
    with make_client(args.sandbox_url, workers=args.workers) as client:
        results = agreement(client)
    table = Table(title="reference solutions judged AC (../shared/data)")
    for col in ("dataset", "references", "AC", "agreement", "disagreements by cause", "unexplained", "seconds"):
        table.add_column(col)
    unexplained_all = {}
    for name, r in results.items():
        causes = Counter(known[name][k]["category"] for k in r["disagreements"] if k in known[name])
        unexplained = {k: v for k, v in r["disagreements"].items() if k not in known[name]}
        unexplained_all.update({f"{name}: {k}": v for k, v in unexplained.items()})
        table.add_row(name, str(r["references"]), str(r["accepted"]), f"{100 * r['accepted'] / r['references']:.1f}%",
                      ", ".join(f"{c} {n}" for c, n in causes.most_common()) or "-", str(len(unexplained)), f"{r['seconds']:.0f}")
    console = Console(width=200)
    console.print(table)
    for name, r in results.items():
        for k, verdict in r["disagreements"].items():
            if k in known[name]:
                console.print(f"[dim]{name}[/dim] {k} ({verdict}): {known[name][k]['reason']}")
    fixed = {f"{name}: {k}" for name in results for k in known[name] if k not in results[name]["disagreements"] and not k.startswith("_")}
    if fixed:
        console.print(f"known disagreements that now agree (update {KNOWN.name}): {sorted(fixed)}")
    if unexplained_all:
        console.print(f"[red]unexplained disagreements: {unexplained_all}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
