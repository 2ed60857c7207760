"""`codealign train` on 2 CPU processes with FSDP2 and bf16 mixed precision, end to end.

Real processes (``torch.distributed.run``, gloo), the tiny model, the real sandbox. Exercises what only a
sharded run does: hf sampling from a gathered policy on shards of unequal size, checkpoints gathered to
the main process, a resume that broadcasts them back into shards, and the final policy saved whole.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import free_port  # noqa: E402

SETTINGS = [
    "model.sharding=fsdp", "model.mixed_precision=bf16", "model.gradient_checkpointing=true", "steps_per_round=1",
    "ppo.prompts_per_step=1", "ppo.n_minibatches=1", "ppo.value_norm=true", "sampling.n_per_prompt=2",
    "sampling.max_new_tokens=16", "eval.n=1", "eval.ks=[1]", "tasks.max_eval_problems=3", "sft.steps=2",
    "log.progress=false", "log.plot=false", "log.tensorboard=false",
]


def train(out, rounds, tmp_path, *extra):
    env = {**os.environ, "CODEALIGN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
            "-m", "codealign", "train", "--out", str(out), "--rounds", str(rounds), *extra]
    for s in SETTINGS:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_fsdp_run_checkpoints_resumes_bit_for_bit_and_saves_the_whole_policy(tmp_path):
    from transformers import AutoModelForCausalLM

    from codealign.train.rounds import CHECKPOINTS, read_checkpoint, read_metrics

    train(tmp_path / "straight", 2, tmp_path)
    train(tmp_path / "resumed", 1, tmp_path)
    proc = train(tmp_path / "resumed", 2, tmp_path, "--resume")
    assert "resuming" in proc.stdout
    rounds = [r for r in read_metrics(tmp_path / "resumed") if r.get("type") == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and all(r["eval_problems"] == 3 for r in rounds)
    a = read_checkpoint(tmp_path / "straight" / CHECKPOINTS / "round_0002")
    b = read_checkpoint(tmp_path / "resumed" / CHECKPOINTS / "round_0002")
    for part in ("policy", "ref", "critic"):
        assert a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
        assert all(t.dtype in (torch.float32, torch.float64) for t in a[part].values())  # fp32 masters (+ fp64 statistics)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed" / "policy")
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in b["policy"].items())
