"""A study's results: per arm, test pass@1 and friends as means over seeds with 95% Student-t intervals.

Per (arm, seed) run, from its ``metrics.jsonl`` round rows (``test_pass@k``, or ``eval_pass@k`` in runs
written before the validation split existed) and step rows:

* ``final``: test pass@1 in the last round;
* ``best``: test pass@1 in the round with the highest *validation* pass@1 (model selection on
  validation; the maximum over rounds of the test curve would select on the test set), round 0 included;
* ``start``: test pass@1 of round 0 (the warm-started policy) and ``gain`` = final - start;
* ``pass@k``: test pass@k in the last round, for each k of ``eval.ks``;
* ``auc``: the area under the test pass@1 curve over rounds 0..R divided by R (trapezoid rule): the
  curve's mean height, so an arm that learns early scores higher than one that gets there late;
* ``judged``: training samples judged (the ``n_rollouts`` of every step row);
* ``wall_s``: the run's ``elapsed_s`` at its last round (time lost to kills excluded).

Across seeds: mean and the 95% t-interval mean +- t(0.975, n-1) s / sqrt(n) (none for one seed).
``vs_first``: the per-seed difference of final test pass@1 against the study's first arm, with its
t-interval: the seeds share their warm start across arms, so the paired difference is far less noisy
than either arm's own interval.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

from codealign.study.config import run_dir


def t_interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% Student-t interval of ``values`` (bounds None for fewer than two)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "values": []}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1, "values": list(values)}
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "values": list(values)}


def read_run(out: Path) -> dict[str, Any] | None:
    """A run's curves and summary figures; None when it has no round row yet."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rounds = [r for r in rows if r.get("type") == "round"]
    if not rounds:
        return None
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    test = lambda r, k=1: r.get(f"test_pass@{k}", r.get(f"eval_pass@{k}"))  # noqa: E731
    curve = [test(r) for r in rounds]
    val = [r.get("val_pass@1") for r in rounds]
    best_round = max(range(len(rounds)), key=lambda i: (val[i], -i)) if all(v is not None for v in val) else len(rounds) - 1
    R = rounds[-1]["round"]
    auc = (sum((curve[i] + curve[i + 1]) / 2 for i in range(len(curve) - 1)) / R) if R > 0 else curve[0]
    ks = sorted(int(k.split("@")[1]) for k in rounds[-1] if k.startswith("eval_pass@") and not k.endswith("_se"))
    return {
        "rounds": [r["round"] for r in rounds],
        "curve": curve,
        "val_curve": val,
        "complete": R == config.get("rounds", R) and (out / "policy" / "config.json").exists(),
        "final": curve[-1],
        "best": curve[best_round],
        "best_round": rounds[best_round]["round"],
        "start": curve[0],
        "gain": curve[-1] - curve[0],
        "auc": auc,
        **{f"pass@{k}": test(rounds[-1], k) for k in ks},
        "judged": sum(r.get("n_rollouts", 0) for r in rows if r.get("type") == "step"),
        "wall_s": rounds[-1].get("elapsed_s"),
        "algo": config.get("algo"),
    }


METRICS = ("final", "best", "start", "gain", "auc")


def summarize(out: Path, arms: list[str], seeds: list[int]) -> dict[str, Any]:
    """``table.json``'s content: per arm, every metric's per-seed values, mean and interval, and the
    per-round curve over seeds. Only complete runs count (the table says how many)."""
    runs = {(a, s): read_run(run_dir(out, a, s)) for a in arms for s in seeds}
    complete = {k: v for k, v in runs.items() if v is not None and v["complete"]}
    table: dict[str, Any] = {"seeds": seeds, "arms": {}}
    first = arms[0]
    for arm in arms:
        got = {s: complete[arm, s] for s in seeds if (arm, s) in complete}
        entry: dict[str, Any] = {"seeds": sorted(got), "algo": next((r["algo"] for r in got.values()), None)}
        names = list(METRICS) + sorted({k for r in got.values() for k in r if k.startswith("pass@")}, key=lambda k: int(k[5:]))
        for name in names + ["judged", "wall_s"]:
            entry[name] = t_interval([r[name] for r in got.values() if r.get(name) is not None])
        paired = [got[s]["final"] - complete[first, s]["final"] for s in got if (first, s) in complete]
        entry["vs_first"] = t_interval(paired) if arm != first else None
        n_rounds = min((len(r["curve"]) for r in got.values()), default=0)
        entry["curve"] = [t_interval([r["curve"][i] for r in got.values()]) for i in range(n_rounds)]
        # the same curve as each run's gain over its own round 0: seeds differ most in where they start
        entry["gain_curve"] = [t_interval([r["curve"][i] - r["curve"][0] for r in got.values()]) for i in range(n_rounds)]
        table["arms"][arm] = entry
    return table


def _fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    if stat["low"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def table_markdown(table: dict[str, Any], title: str = "") -> str:
    arms = table["arms"]
    ks = sorted({k for e in arms.values() for k in e if k.startswith("pass@") and k != "pass@1"}, key=lambda k: int(k[5:]))
    first = next(iter(arms))
    head = ["arm", "algo", "seeds", "final test pass@1", "best (val-selected)", "round 0", "gain", "AUC",
            *[f"final {k}" for k in ks], f"final - {first} (paired)", "judged samples", "wall s"]
    lines = [f"# {title}" if title else "", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in arms.items():
        cells = [name, str(e["algo"]), str(len(e["seeds"])), _fmt(e["final"]), _fmt(e["best"]), _fmt(e["start"]),
                 _fmt(e["gain"]), _fmt(e["auc"]), *[_fmt(e.get(k)) for k in ks], _fmt(e["vs_first"]) if e["vs_first"] else "-",
                 _fmt(e["judged"], 0), _fmt(e["wall_s"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Means over seeds {table['seeds']} (complete runs only; `seeds` counts them) with 95% Student-t "
              "intervals [low, high]. Test split throughout; `best` is the test pass@1 of the round with the highest "
              "validation pass@1. `paired`: per-seed difference of final test pass@1 against the first arm."]
    return "\n".join(lines).lstrip() + "\n"


def plot_curves(table: dict[str, Any], path: Path, title: str = "") -> None:
    """Mean test pass@1 per round, one line per arm, with its 95% t-interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("curve", "test pass@1 (mean over seeds, 95% CI)"),
              ("gain_curve", "test pass@1 - round 0's (paired per seed, 95% CI)"))
    for ax, (key, label) in zip(axes, panels):
        for name, e in table["arms"].items():
            curve = e.get(key) or []
            if not curve:
                continue
            x = list(range(len(curve)))
            ax.plot(x, [c["mean"] for c in curve], "o-", label=f"{name} (n={len(e['seeds'])})")
            if all(c["low"] is not None for c in curve):
                ax.fill_between(x, [c["low"] for c in curve], [c["high"] for c in curve], alpha=0.12)
        ax.set_xlabel("round")
        ax.set_ylabel(label, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylim(bottom=0)
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle(textwrap.fill(title or "codealign study", 110), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, arms: list[str], seeds: list[int], title: str = "") -> dict[str, Any]:
    """``table.json``, ``table.md`` and ``curves.png`` in ``out``; returns the table."""
    table = summarize(out, arms, seeds)
    (out / "table.json").write_text(json.dumps(table, indent=1))
    (out / "table.md").write_text(table_markdown(table, title))
    plot_curves(table, out / "curves.png", title)
    return table
