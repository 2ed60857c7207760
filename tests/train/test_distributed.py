"""Data-parallel PPO: 2 CPU processes (gloo) produce the same gradient as 1 process on the whole batch.

Real processes launched with ``torch.distributed.run`` (what ``accelerate launch`` does underneath);
each takes half of the rollouts. Token-sum losses divided by the global token count and advantages
normalized over all processes' tokens make the averaged gradient equal the single-process one.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "_ddp_worker.py"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, out, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, *args, str(WORKER), str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_gradient(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    run([], one)
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())], two)
    ref = torch.load(one / "grads_0.pt")
    r0, r1 = torch.load(two / "grads_0.pt"), torch.load(two / "grads_1.pt")
    assert ref["world"] == 1 and r0["world"] == 2 and "gloo" in r0["backend"]
    for part in ("policy", "critic"):
        assert len(ref["grads"][part]) == len(r0["grads"][part]) > 0
        for g1, g2a, g2b in zip(ref["grads"][part], r0["grads"][part], r1["grads"][part]):
            assert torch.equal(g2a, g2b)  # all-reduced: both ranks hold the same gradient
            assert torch.allclose(g1, g2a, rtol=1e-4, atol=1e-7), part
        assert any(g.abs().sum() > 0 for g in ref["grads"][part])
