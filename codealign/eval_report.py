"""What ``codealign eval`` reports: ``summary.json``'s figures, the terminal tables and the pass@k plot.

The terminal report fits an 80-column terminal: a narrow headline table (pass@k, n@k, APPS averages,
verdict counts), then pass@k per difficulty and per source, one row per group, at most
:data:`KS_PER_TABLE` k per table (more k: more tables).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

#: k columns per breakdown table: group (up to 20 characters) + problems + 4 x pass@k fits 80 columns.
KS_PER_TABLE = 4


def summarize(problems: dict, rows: list[dict], ks: list[int], submissions: int, *, full_tests: bool = True) -> dict[str, Any]:
    """summary.json's figures from the result rows (see :mod:`codealign.evaluate`)."""
    from codealign.metrics import SampleOutcome, mean_pass_at_k, n_at_k, pass_at_k, strict_accuracy, test_case_average

    by_pid: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_pid[r["problem_id"]].append(r)
    counts = {pid: (len(rs), sum(r["correct"] for r in rs)) for pid, rs in by_pid.items()}
    summary: dict[str, Any] = {
        "pass_at_k": {str(k): v for k, v in mean_pass_at_k(counts.values(), ks).items()},
        "n_problems": len(by_pid),
        "n_samples": len(rows),
        "k": ks,
        "n_per_problem": {"min": min(n for n, _ in counts.values()), "max": max(n for n, _ in counts.values())},
        "strict_accuracy": strict_accuracy(counts.values()),
        "verdicts": dict(Counter(r["verdict"] for r in rows).most_common()),
        "no_program": sum(r["code"] is None for r in rows),
        "distinct_programs": len({(r["problem_id"], r["code"]) for r in rows}),
    }
    if full_tests:
        fractions = {pid: [r["passed"] / r["total"] if r["total"] else 0.0 for r in rs] for pid, rs in by_pid.items()}
        summary["test_case_average"] = test_case_average(fractions)
        outcomes = {
            pid: [SampleOutcome(r["sample_index"], r["public_ok"], r["signature"], r["correct"]) for r in rs]
            for pid, rs in by_pid.items()
        }
        summary["n_at_k"] = {
            f"{submissions}@{k}": sum(n_at_k(o, submissions, k) for o in outcomes.values()) / len(outcomes) for k in ks
        }
    for key, attr in (("by_difficulty", "difficulty"), ("by_source", "source")):
        groups: dict[str, list[str]] = defaultdict(list)
        for pid in by_pid:
            groups[getattr(problems[pid], attr) or "unknown"].append(pid)
        summary[key] = {
            g: {
                "n_problems": len(pids),
                "pass_at_k": {str(k): sum(pass_at_k(*counts[p], k) for p in pids) / len(pids) for k in ks},
            }
            for g, pids in sorted(groups.items())
        }
    return summary


def plot(summary: dict, rows: list[dict], path: Path) -> None:
    """pass@k (and n@k) against k, log scale, every k up to the smallest n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from codealign.metrics import mean_pass_at_k

    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        counts[r["problem_id"]][0] += 1
        counts[r["problem_id"]][1] += int(r["correct"])
    n_min = summary["n_per_problem"]["min"]
    grid = sorted({1, n_min, *[int(round(x)) for x in (1.5**i for i in range(60)) if x <= n_min]})
    curve = mean_pass_at_k([tuple(v) for v in counts.values()], grid)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, [curve[k] for k in grid], label="pass@k")
    ks = [int(k) for k in summary["pass_at_k"]]
    ax.scatter(ks, [summary["pass_at_k"][str(k)] for k in ks], zorder=3)
    if "n_at_k" in summary:
        pts = [(int(name.split("@")[1]), v) for name, v in summary["n_at_k"].items()]
        ax.plot([k for k, _ in pts], [v for _, v in pts], "s--", label=next(iter(summary["n_at_k"])).split("@")[0] + "@k")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("fraction of problems solved")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{summary['n_problems']} problems, {summary['n_samples']} samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def tables(summary: dict) -> list:
    """The report as rich renderables: the headline table, then the breakdown tables."""
    from rich import box
    from rich.table import Table

    head = Table(box=box.SIMPLE_HEAD)
    head.add_column("metric", no_wrap=True)
    head.add_column("all problems", justify="right", no_wrap=True)
    for k, v in summary["pass_at_k"].items():
        head.add_row(f"pass@{k}", _pct(v))
    for name, v in summary.get("n_at_k", {}).items():
        head.add_row(name, _pct(v))
    if "test_case_average" in summary:
        head.add_row("test-case average", _pct(summary["test_case_average"]))
    head.add_row("strict accuracy", _pct(summary["strict_accuracy"]), end_section=True)
    total = max(1, summary["n_samples"])
    for verdict, count in summary["verdicts"].items():
        head.add_row(f"verdict {verdict}", f"{count} ({100 * count / total:.1f}%)")
    out: list = [head]
    ks = list(summary["pass_at_k"])
    for key, label in (("by_difficulty", "difficulty"), ("by_source", "source")):
        groups = summary.get(key) or {}
        for start in range(0, len(ks), KS_PER_TABLE):
            part = ks[start : start + KS_PER_TABLE]
            table = Table(title=f"pass@k by {label}", box=box.SIMPLE_HEAD)
            table.add_column(label, max_width=20, overflow="fold")
            table.add_column("problems", justify="right", no_wrap=True)
            for k in part:
                table.add_column(f"pass@{k}", justify="right", no_wrap=True)
            for g, figures in groups.items():
                table.add_row(g, str(figures["n_problems"]), *[_pct(figures["pass_at_k"][k]) for k in part])
            out.append(table)
    return out


def notes(summary: dict) -> list[str]:
    """One line for each set of problems that is not in the figures, and each sampling warning."""
    lines = []
    if summary.get("too_long", {}).get("n_problems"):
        lines.append(f"not scored: {summary['too_long']['n_problems']} problems whose prompt exceeds the model's context")
    if summary.get("no_tests", {}).get("n_problems"):
        lines.append(f"not scored: {summary['no_tests']['n_problems']} problems with no tests")
    if summary.get("identical_samples", {}).get("n_problems"):
        ident = summary["identical_samples"]
        lines.append(f"{ident['n_problems']} of {ident['of']} problems got identical samples at temperature {ident['temperature']:g}")
    return lines


def print_report(summary: dict, console: Any = None) -> None:
    """The tables and notes on ``console`` (default: stdout at the terminal's width)."""
    from rich.console import Console

    console = console or Console()
    console.print(f"codealign eval: {summary['n_problems']} problems, {summary['n_samples']} samples")
    for table in tables(summary):
        console.print(table)
    for line in notes(summary):
        console.print(line, soft_wrap=False)
