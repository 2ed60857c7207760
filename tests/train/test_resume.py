"""`codealign train --resume` after a real SIGKILL in the middle of a round.

The run is a real subprocess (tiny model, real sandbox, real judging), started with `--rounds 3` and
`--set` overrides, killed once a step of round 2 is on disk but before round 2 ends. The resumed run,
given only `--out DIR --resume`, must continue with the saved config (3 rounds, its steps per round,
not the defaults) and rerun round 2 from its start: every round and every step appears exactly once,
and the replayed step sees the same samples as the killed one. Only explicit flags change a resumed
run's config, and it says which.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SETTINGS = [
    "steps_per_round=2", "ppo.prompts_per_step=1", "ppo.n_minibatches=1", "sampling.n_per_prompt=2",
    "sampling.max_new_tokens=16", "eval.n=1", "eval.ks=[1]", "tasks.max_eval_problems=2", "tasks.max_val_problems=1", "sft.steps=2",
    "log.progress=false", "log.plot=false",
]


def cmd(out, *extra):
    args = [sys.executable, "-m", "codealign", "train", "--out", str(out), "--rounds", "3"]
    for s in SETTINGS:
        args += ["--set", s]
    return args + list(extra)


def rows(out):
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_resume_after_kill_mid_round_loses_and_repeats_nothing(tmp_path):
    env = {**os.environ, "CODEALIGN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    killed_row = None
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            steps = [r for r in rows(out) if r.get("type") == "step" and r["train_round"] == 2]
            if steps:
                killed_row = steps[0]
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_row is not None, f"run ended or timed out before round 2: {proc.stderr.read().decode()[-2000:]}"
    before = rows(out)
    assert not any(r.get("round") == 2 for r in before), "killed too late: round 2 had finished"

    resume_only = [sys.executable, "-m", "codealign", "train", "--out", str(out), "--resume"]
    done = subprocess.run(resume_only, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stdout and "after round 1" in done.stdout
    assert "config.json, unchanged" in done.stdout
    assert json.loads((out / "config.json").read_text())["rounds"] == 3
    after = rows(out)
    assert [r["round"] for r in after if r.get("type") == "round"] == [0, 1, 2, 3]
    steps = [r for r in after if r.get("type") == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["train_round"] for r in steps] == [1, 1, 2, 2, 3, 3]
    # rows of finished rounds are kept byte for byte; the replayed step saw the same samples
    assert after[: len([r for r in before if r.get("type") == "round" or r["train_round"] < 2])] == [
        r for r in before if r.get("type") == "round" or r["train_round"] < 2
    ]
    replayed = next(r for r in steps if r["step"] == killed_row["step"])
    for key in ("response_len", "reward_mean", "n_rollouts", "no_code_frac"):
        assert replayed[key] == killed_row[key], key
    assert (out / "policy" / "config.json").exists()

    # a second --resume of a finished run trains nothing more
    again = subprocess.run(resume_only, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0 and rows(out) == after
    # an explicit flag changes the saved config, and the run says so: one more round, same steps per round
    longer = subprocess.run(resume_only + ["--rounds", "4"], env=env, capture_output=True, text=True, timeout=400)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "changed by flags: rounds: 3 -> 4" in longer.stdout
    extended = rows(out)
    assert [r["round"] for r in extended if r.get("type") == "round"] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in extended if r.get("type") == "step"] == [1, 2, 3, 4, 5, 6, 7, 8]
    fresh = subprocess.run(cmd(out), env=env, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 2 and "--resume" in fresh.stderr  # never silently clobbers a run


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "dpo"])
def test_resume_in_bf16_continues_bit_for_bit(tmp_path, monkeypatch, algo):
    """Rounds 1-2 in one go, and round 1 then --resume for round 2, with bf16 mixed precision: the fp32
    master weights, EMA reference, critic (with its return statistics) and optimizer states saved at
    round 1 make round 2 identical, bit for bit."""
    import torch

    from codealign.train.config import build_config
    from codealign.train.rounds import CHECKPOINTS, read_checkpoint, read_metrics, train

    monkeypatch.setenv("CODEALIGN_CACHE", str(tmp_path / "cache"))
    sets = [s for s in SETTINGS if not s.startswith("ppo.")] + [
        f"{algo}.prompts_per_step=1", "model.mixed_precision=bf16", "log.tensorboard=false", "device=cpu",
    ] + (["ppo.n_minibatches=1", "ppo.value_norm=true", "ppo.ema_eta=0.1"] if algo == "ppo" else ["dpo.nll_weight=1.0"])

    def config(out, rounds):
        return build_config(overrides=sets, algo=algo, rounds=rounds, out=str(tmp_path / out))

    train(config("straight", 2))
    train(config("resumed", 1))
    train(config("resumed", 2), resume=True)
    a = read_checkpoint(tmp_path / "straight" / CHECKPOINTS / "round_0002")
    b = read_checkpoint(tmp_path / "resumed" / CHECKPOINTS / "round_0002")

    def same(x, y, path):
        if isinstance(x, dict):
            assert set(x) == set(y), path
            for k in x:
                same(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), path
        elif isinstance(x, (list, tuple)):  # (a reloaded optimizer keeps AdamW's betas as a list)
            assert len(x) == len(y), path
            for i, (p, q) in enumerate(zip(x, y)):
                same(p, q, f"{path}[{i}]")
        else:
            assert x == y, path

    same(a, b, "state")
    assert a["policy"] and all(t.dtype == torch.float32 for t in a["policy"].values())
    if algo == "ppo":
        assert float(a["critic"]["value_norm.debias"]) > 0  # the return statistics travelled too
    timing = ("_s", "tokens_per_s")
    rows = [[{k: v for k, v in r.items() if not k.endswith(timing)} for r in read_metrics(tmp_path / d) if r.get("type") == "step"]
            for d in ("straight", "resumed")]
    assert rows[0] == rows[1] and len(rows[0]) == 4
