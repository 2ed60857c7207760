"""`codealign study` end to end on a miniature study: real training runs (tiny model, real sandbox),
the study process killed with SIGKILL mid-way, then run again: finished (arm, seed) runs are kept byte
for byte, the interrupted one resumes from its last complete round, none runs twice, and the tables
come out with both arms matched on judged samples."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TINY = ["steps_per_round=2", "sampling.n_per_prompt=2", "sampling.max_new_tokens=16", "eval.n=1", "eval.ks=[1]",
        "tasks.max_eval_problems=2", "tasks.max_val_problems=1", "sft.steps=2", "log.progress=false", "log.plot=false",
        "ppo.n_minibatches=1"]
STUDY = {
    "description": "miniature",
    "set": ["rounds=2", *TINY],
    "seeds": [0],
    "match_judged_samples": True,
    "arms": [{"name": "ppo", "set": ["ppo.prompts_per_step=2"]},
             {"name": "grpo", "set": ["algo=grpo", "ppo.prompts_per_step=1"]}],
}


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.slow
def test_study_resumes_per_arm_and_seed_after_sigkill(tmp_path):
    import yaml

    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "study"
    args = [sys.executable, "-m", "codealign", "study", "--config", str(tmp_path / "study.yaml"), "--out", str(out)]
    env = {**os.environ, "CODEALIGN_CACHE": str(tmp_path / "cache")}
    first = out / "runs" / "ppo" / "seed0"
    second = out / "runs" / "grpo" / "seed0"
    proc = subprocess.Popen(args + ["--jobs", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    child = None
    deadline = time.time() + 500
    try:
        while time.time() < deadline and proc.poll() is None:
            if [r for r in rows(second / "metrics.jsonl") if r.get("type") == "step"]:
                child = next(int(p) for p in os.listdir("/proc") if p.isdigit() and str(second) in
                             open(f"/proc/{p}/cmdline").read().replace("\0", " ") and int(p) != proc.pid)
                os.kill(proc.pid, signal.SIGKILL)  # the study only: its training process must die with it
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert child is not None, proc.stdout.read().decode()[-3000:]
    for _ in range(100):  # PR_SET_PDEATHSIG: the orphaned run is killed by the kernel
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child), "the training process outlived the killed study"
    done_before = (first / "metrics.jsonl").read_bytes()
    assert [r["round"] for r in rows(first / "metrics.jsonl") if r.get("type") == "round"] == [0, 1, 2]
    assert not any(r.get("round") == 2 for r in rows(second / "metrics.jsonl"))

    again = subprocess.run(args + ["--jobs", "2"], env=env, capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 already done" in again.stdout and "[grpo seed 0] resume" in again.stdout and "[ppo seed 0]" not in again.stdout
    assert (first / "metrics.jsonl").read_bytes() == done_before  # the finished run was not touched
    grpo = rows(second / "metrics.jsonl")
    assert [r["round"] for r in grpo if r.get("type") == "round"] == [0, 1, 2]
    # matched: ppo judges 2 prompts x 2 samples per step over 2 steps; grpo 1 prompt x 2 samples over 4 steps
    assert [r["step"] for r in grpo if r.get("type") == "step"] == list(range(1, 9))
    table = json.loads((out / "table.json").read_text())
    assert table["arms"]["ppo"]["judged"]["mean"] == table["arms"]["grpo"]["judged"]["mean"] == 16
    assert table["arms"]["grpo"]["algo"] == "grpo" and table["arms"]["grpo"]["seeds"] == [0]
    assert "| grpo | grpo | 1 |" in (out / "table.md").read_text() and (out / "curves.png").exists()

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=200)
    assert rerun.returncode == 0 and "2 already done" in rerun.stdout and rows(second / "metrics.jsonl") == grpo
