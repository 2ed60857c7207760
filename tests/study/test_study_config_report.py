"""The study file, its resolution into training configs (with matching on judged samples), and the
report (means, Student-t intervals, validation-selected best round, AUC, paired differences)."""

import json
import math
from pathlib import Path

import pytest

from codealign.study.config import load_study, resolve, run_dir, samples_per_step
from codealign.study.report import read_run, summarize, t_interval, table_markdown, write_report
from codealign.train.config import ConfigError

STUDY = """
description: two arms
set: [rounds=2, "ppo.prompts_per_step=4"]
seeds: [0, 1]
arms:
  - name: ppo
  - name: grpo
    set: [algo=grpo, "ppo.prompts_per_step=2"]
  - name: dpo
    config: dpo.yaml
"""


def write_study(tmp_path, text=STUDY, **files):
    (tmp_path / "dpo.yaml").write_text("algo: dpo\nrounds: 5\ndpo:\n  prompts_per_step: 8\n")
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_arms_resolve_in_order_defaults_file_study_arm_seed(tmp_path):
    study, root = load_study(write_study(tmp_path))
    configs = resolve(study, root, tmp_path / "out", [0, 3])
    ppo, grpo, dpo = configs["ppo", 3], configs["grpo", 3], configs["dpo", 0]
    assert (ppo.algo, ppo.rounds, ppo.ppo.prompts_per_step, ppo.seed) == ("ppo", 2, 4, 3)
    assert (grpo.algo, grpo.ppo.prompts_per_step, grpo.ppo.beta) == ("grpo", 2, 0.04)  # arm's set after the study's
    assert (dpo.algo, dpo.rounds, dpo.dpo.prompts_per_step) == ("dpo", 2, 8)  # the study's set beats the arm's file
    assert ppo.out == str(run_dir(tmp_path / "out", "ppo", 3)) and ppo.tasks.seed == 0  # same tasks for every seed


def test_matching_gives_every_arm_the_same_judged_samples_per_round(tmp_path):
    path = write_study(tmp_path, STUDY + "match_judged_samples: true\n")
    study, root = load_study(path)
    configs = resolve(study, root, tmp_path / "out", [0])
    per_round = {a: samples_per_step(c) * c.steps_per_round for (a, _), c in configs.items()}
    # the largest own budget: dpo, 64 steps x 8 prompts x 8 samples = 4096 per round
    assert per_round == {"ppo": 4096, "grpo": 4096, "dpo": 4096}
    assert configs["grpo", 0].steps_per_round == 2 * configs["ppo", 0].steps_per_round
    explicit = write_study(tmp_path, STUDY + "match_judged_samples: true\njudged_samples_per_round: 640\n")
    study, root = load_study(explicit)
    configs = resolve(study, root, tmp_path / "out", [0])
    assert [c.steps_per_round for c in configs.values()] == [20, 40, 10]


@pytest.mark.parametrize("text, match", [
    ("arms: []", "arms"),
    ("arms: [{name: a}, {name: a}]", "unique"),
    ("arms: [{name: a, sett: []}]", "sett"),
    ("arms: [{name: 'a b'}]", "name"),
    ("arms: [{name: a, set: [ppo.betta=1]}]", "(?s)arm 'a'.*ppo.betta"),
    ("arms: [{name: a, config: missing.yaml}]", "not found"),
])
def test_bad_study_files_are_clear_errors(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        study, root = load_study(write_study(tmp_path, text))
        resolve(study, root, tmp_path / "out", [0])


def test_t_interval_by_hand():
    got = t_interval([0.1, 0.2, 0.3])
    half = 4.302652729749462 * 0.1 / math.sqrt(3)  # t(0.975, df=2) = 4.3027; sample sd 0.1
    assert got["mean"] == pytest.approx(0.2) and got["low"] == pytest.approx(0.2 - half) and got["high"] == pytest.approx(0.2 + half)
    assert t_interval([0.5]) == {"mean": 0.5, "low": None, "high": None, "n": 1, "values": [0.5]}
    assert t_interval([])["mean"] is None


def fake_run(out: Path, test, val, algo="ppo", n_rollouts=64, elapsed=100.0, complete=True):
    """A run directory as `codealign train` leaves it (hand-written rows: the report's input format)."""
    out.mkdir(parents=True)
    rows = []
    for r, (t, v) in enumerate(zip(test, val)):
        if r > 0:
            rows.append({"type": "step", "step": r, "train_round": r, "n_rollouts": n_rollouts})
        rows.append({"type": "round", "round": r, "eval_pass@1": t, "test_pass@1": t, "eval_pass@4": min(1, 2 * t),
                     "test_pass@4": min(1, 2 * t), "val_pass@1": v, "elapsed_s": elapsed * (r + 1) / len(test)})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "config.json").write_text(json.dumps({"algo": algo, "rounds": len(test) - 1}))
    if complete:
        (out / "policy").mkdir()
        (out / "policy" / "config.json").write_text("{}")


def test_report_final_best_by_validation_auc_and_paired_difference(tmp_path):
    # arm a: seed 0 curve 0.1 0.3 0.2 (val peaks at round 1) ; seed 1: 0.2 0.2 0.4
    fake_run(run_dir(tmp_path, "a", 0), [0.1, 0.3, 0.2], [0.1, 0.5, 0.2])
    fake_run(run_dir(tmp_path, "a", 1), [0.2, 0.2, 0.4], [0.1, 0.1, 0.3])
    fake_run(run_dir(tmp_path, "b", 0), [0.1, 0.1, 0.1], [0.1, 0.1, 0.1], algo="grpo", n_rollouts=32)
    fake_run(run_dir(tmp_path, "b", 1), [0.2, 0.2, 0.3], [0.2, 0.1, 0.1], algo="grpo", n_rollouts=32)
    fake_run(run_dir(tmp_path, "c", 0), [0.1, 0.9], [0.1, 0.9], complete=False)  # killed: not counted
    run = read_run(run_dir(tmp_path, "a", 0))
    assert (run["final"], run["best"], run["best_round"], run["start"]) == (0.2, 0.3, 1, 0.1)
    assert run["auc"] == pytest.approx(((0.1 + 0.3) / 2 + (0.3 + 0.2) / 2) / 2)
    assert run["judged"] == 128 and run["pass@4"] == 0.4
    assert read_run(run_dir(tmp_path, "b", 1))["best_round"] == 0  # ties and the best go to the earliest round

    table = summarize(tmp_path, ["a", "b", "c"], [0, 1])
    a, b, c = (table["arms"][k] for k in "abc")
    assert a["final"]["values"] == [0.2, 0.4] and a["final"]["mean"] == pytest.approx(0.3)
    assert a["best"]["values"] == [0.3, 0.4] and b["algo"] == "grpo"
    assert b["vs_first"]["values"] == pytest.approx([0.1 - 0.2, 0.3 - 0.4]) and a["vs_first"] is None
    assert [p["mean"] for p in a["curve"]] == pytest.approx([0.15, 0.25, 0.3])
    assert c["seeds"] == [] and c["final"]["mean"] is None
    md = table_markdown(table, "t")
    assert "| a | ppo | 2 | 0.300 [" in md and "| c | None | 0 | - |" in md
    write_report(tmp_path, ["a", "b", "c"], [0, 1], "t")
    assert json.loads((tmp_path / "table.json").read_text())["arms"]["b"]["judged"]["mean"] == 64
    assert (tmp_path / "curves.png").stat().st_size > 5000
