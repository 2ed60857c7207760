"""The terminal report of `codealign eval`: readable in an 80-column terminal, whatever the groups and k."""

import time

from rich.console import Console

from codealign.eval_report import print_report, summarize
from codealign.eval_sampling import progress
from codealign.problems import Problem


def summary_for(ks, groups):
    """A real summary (through `summarize`) over problems in the given difficulty groups, 1000 samples each."""
    problems, rows = {}, []
    for g, group in enumerate(groups):
        for i in range(3):
            pid = f"{group}-{i}"
            problems[pid] = Problem(id=pid, source="codecontests" if i else "a-rather-long-source-name", statement="", difficulty=group)
            for j in range(1000):
                correct = (j + g + i) % 7 == 0
                rows.append({"problem_id": pid, "sample_index": j, "code": f"c{j % 40}", "verdict": "AC" if correct else ("WA" if j % 3 else "TLE"),
                             "passed": 3 if correct else 1, "total": 3, "correct": correct, "public_ok": True, "signature": f"s{j % 5}"})
    return summarize(problems, rows, ks, 10)


def render(summary, width=80) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    print_report(summary, console)
    return console.export_text()


def test_report_fits_80_columns_with_every_figure_whole():
    summary = summary_for([1, 10, 100, 1000], ["UNKNOWN_DIFFICULTY", "introductory", "interview", "competition", "A"])
    summary["too_long"] = {"n_problems": 4}
    text = render(summary)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert "…" not in text  # nothing cut to an ellipsis
    for k in (1, 10, 100, 1000):
        assert f"pass@{k} " in text and f"10@{k}" in text
    assert "UNKNOWN_DIFFICULTY" in text and "competition" in text
    assert "a-rather-long-source" in text and "-name" in text  # a long group name folds, nothing is lost
    headline = next(line for line in lines if line.strip().startswith("pass@1000"))
    assert headline.strip().endswith(f"{100 * summary['pass_at_k']['1000']:.2f}%")
    assert "verdict WA" in text and "verdict TLE" in text
    assert "not scored: 4 problems whose prompt exceeds the model's context" in text


def test_many_k_split_into_several_breakdown_tables():
    ks = [1, 2, 5, 10, 20, 50, 100, 200, 500]
    text = render(summary_for(ks, ["interview"]))
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert text.count("pass@k by difficulty") == 3
    for k in ks:
        assert f"pass@{k}" in text


def test_progress_shows_samples_per_second_and_eta():
    bar = progress(True)
    task = bar.add_task("sampling", total=100)
    for _ in range(5):
        bar.advance(task, 10)
        time.sleep(0.02)
    console = Console(width=120, record=True, color_system=None)
    console.print(bar.make_tasks_table(bar.tasks))
    text = console.export_text()
    assert "50/100" in text and "samples/s" in text and "ETA" in text
    rate = float(text.split("samples/s")[0].split()[-1])
    assert rate > 0
