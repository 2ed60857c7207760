"""`codealign train --algo dpo` end to end on a miniature setting: real tiny model, real sandbox."""

import json
import os
import subprocess
import sys

import pytest


def run_train(tmp_path, algo: str, rounds: int, sets: list[str]) -> tuple[list[dict], str]:
    """`codealign train --algo ALGO --rounds R --out tmp_path/run --set ...` as a real process: its metrics
    rows and its standard output."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "codealign", "train", "--algo", algo, "--rounds", str(rounds), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "CODEALIGN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], proc.stdout


@pytest.mark.slow
def test_dpo_run_writes_round_rows_steps_plot_and_final_policy(tmp_path):
    out = tmp_path / "run"
    sets = ["steps_per_round=1", "dpo.prompts_per_step=2", "sampling.n_per_prompt=2", "sampling.max_new_tokens=16",
            "eval.n=2", "eval.ks=[1,2]", "tasks.max_eval_problems=2", "tasks.max_val_problems=2", "sft.steps=2", "log.progress=false"]
    rows, stdout = run_train(tmp_path, "dpo", 2, sets)
    rounds = [r for r in rows if "round" in r]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds:
        assert 0.0 <= r["eval_pass@1"] <= 1.0 and 0.0 <= r["eval_pass@2"] <= 1.0
        assert r["eval_problems"] == 2 and r["eval_samples"] == 4
        # eval_pass@k is the test split's pass@k; validation is evaluated beside it, both with standard errors
        assert r["test_pass@1"] == r["eval_pass@1"] and r["test_problems"] == 2
        assert 0.0 <= r["test_pass@1_se"] <= 0.5 and 0.0 <= r["val_pass@1_se"] <= 0.5
        assert 0.0 <= r["val_pass@2"] <= 1.0 and r["val_problems"] == 2 and r["val_samples"] == 4
    steps = [r for r in rows if r.get("type") == "step"]
    assert [s["step"] for s in steps] == [1, 2] and all(s["algo"] == "dpo" and s["n_rollouts"] == 4 for s in steps)
    for key in ("dpo_loss", "n_pairs", "reward_mean", "gen_s", "judge_s", "update_s"):
        assert key in steps[0]
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["algo"] == "dpo"
    assert (out / "policy" / "config.json").exists() and (out / "start_policy" / "tokenizer.json").exists()
    # so that `transformers serve out/policy` samples at the requested temperature (it follows this flag)
    assert json.loads((out / "policy" / "generation_config.json").read_text())["do_sample"] is True
    assert "done:" in stdout


@pytest.mark.slow
def test_algo_grpo_runs_grpo_without_a_critic(tmp_path):
    """The contract `codealign train --algo grpo` runs GRPO: group-normalised advantages, KL in the loss, no critic."""
    out = tmp_path / "run"
    sets = ["steps_per_round=2", "ppo.prompts_per_step=2", "sampling.n_per_prompt=4", "sampling.max_new_tokens=16",
            "eval.n=1", "eval.ks=[1]", "tasks.max_eval_problems=2", "tasks.max_val_problems=1", "sft.steps=2",
            "log.progress=false", "log.plot=false"]
    rows, _ = run_train(tmp_path, "grpo", 1, sets)
    steps = [r for r in rows if r.get("type") == "step"]
    assert len(steps) == 2 and all(s["algo"] == "grpo" and s["n_rollouts"] == 8 for s in steps)
    assert all("kl_loss" in s and "value_loss" not in s for s in steps)
    saved = json.loads((out / "config.json").read_text())
    assert saved["algo"] == "grpo" and saved["ppo"]["beta"] == 0.04 and saved["ppo"]["kl_estimator"] == "k3"
    ckpt = next((out / "checkpoints").glob("round_*"))
    assert (ckpt / "policy.pt").exists() and not (ckpt / "critic.pt").exists()
