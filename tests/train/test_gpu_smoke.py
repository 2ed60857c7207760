"""``benchmarks/gpu_smoke.py --device cpu --tiny``: the GPU smoke run's CPU form, in CI.

The script runs the real round loop (PPO and DPO, bf16 mixed precision) and exits non-zero when a sanity
check fails; the second test feeds its checks figures of broken runs.
"""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_smoke.py"


@pytest.mark.slow
def test_cpu_tiny_smoke_run_passes_its_sanity_checks(tmp_path):
    env = {**os.environ, "CODEALIGN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "all sanity checks passed" in out and out.count("policy elements changed by the round") == 2
    assert "EMA reference drift" in out and "DPO-Iter reference = policy after the round: True" in out
    print(out)  # the figures, for the log


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def good_figures(algo):
    step = {"gen_s": 1.0, "judge_s": 0.1, "update_s": 1.0, "n_rollouts": 8, "response_len": 10.0, "update_tokens_per_s": 80.0,
            "grad_norm": 0.5, "n_pairs": 4.0, "policy_loss": 0.1, "value_loss": 0.2, "dpo_loss": 0.69}
    return {"steps": [step, dict(step)], "params": 1000, "peak_gib": 0.5, "setup_s": 1.0, "round0_s": 1.0, "round_s": 2.0,
            "sync_s": 0.0, "finish_s": 0.1, "changed": 1.0, "masters_fp32": True, "files_ok": True, "round": {"eval_pass@1": 0.5, "eval_s": 1.0},
            "ema_drift": 1.0e-3, "ema_expected": 1.0e-3, "ref_is_policy": True}


@pytest.mark.parametrize("algo,broken,message", [
    ("ppo", {"changed": 0.0}, "of the policy's elements changed"),
    ("ppo", {"ema_drift": 5e-5}, "EMA reference moved"),  # what a bf16-accumulated EMA does
    ("ppo", {"masters_fp32": False}, "not fp32"),
    ("ppo", {"steps": [{**good_figures("ppo")["steps"][0], "policy_loss": math.nan}]}, "non-finite"),
    ("dpo", {"ref_is_policy": False}, "reference = policy: False"),
    ("dpo", {"files_ok": False}, "checkpoint or final policy missing"),
])
def test_the_sanity_checks_catch_a_broken_run(algo, broken, message):
    smoke = load_script()
    assert smoke.report(algo, good_figures(algo)) == []
    failed = smoke.report(algo, {**good_figures(algo), **broken})
    assert any(message in f for f in failed), failed
