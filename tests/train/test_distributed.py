"""Several processes train exactly like one: 2 CPU processes (gloo), DDP and FSDP2, PPO and DPO.

Real processes launched with ``torch.distributed.run`` (what ``accelerate launch`` does underneath); each
takes half of the rollouts (pairs). Token-sum losses divided by the global token count, advantages and
return statistics over all processes' tokens, and gradients averaged over processes make the gradient
equal the single-process one; the weights after the step (policy, critic, EMA reference, optimizer
states), what a vLLM push sends (gathered whole) and a checkpoint round trip equal too.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import free_port  # noqa: E402

WORKER = Path(__file__).parent / "_ddp_worker.py"


def run(out: Path, sharding: str, mixed: str, processes: int) -> dict:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launch = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())]
    proc = subprocess.run([sys.executable, *launch, str(WORKER), str(out), sharding, mixed], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "result.pt", weights_only=False)


def assert_close(a, b, path="", rtol=1e-4, atol=1e-6):
    if isinstance(a, dict):
        assert set(a) == set(b), (path, sorted(set(a) ^ set(b))[:5])
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}", rtol, atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]", rtol, atol)
    elif isinstance(a, torch.Tensor):
        assert type(b) is torch.Tensor and a.shape == b.shape and a.dtype == b.dtype, path
        assert torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol), (path, float((a.double() - b.double()).abs().max()))
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return run(tmp_path_factory.mktemp("one") / "r", "none", "no", 1)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_two_gloo_processes_match_one_process(tmp_path, one_process, sharding):
    two = run(tmp_path / "two", sharding, "no", 2)
    assert one_process["world"] == 1 and two["world"] == 2 and "gloo" in two["backend"]
    for key in ("ppo_grads", "dpo_grads"):
        assert one_process[key] and all(len(g) > 0 for g in one_process[key].values())
        assert any(float(g.abs().sum()) > 0 for part in one_process[key].values() for g in part.values())
        assert_close(one_process[key], two[key], key)
    # weights after the step: policy, EMA reference, critic (+ its return statistics), optimizer states
    assert_close(one_process["ppo_state"], two["ppo_state"], "ppo_state")
    assert_close(one_process["dpo_state"], two["dpo_state"], "dpo_state")
    # the EMA reference moved by exactly eta toward the policy, shard by shard
    ref0, state = two["ppo_ref0"], two["ppo_state"]
    for name, value in state["ref"].items():
        assert torch.allclose(value, 0.75 * ref0[name] + 0.25 * state["policy"][name], atol=1e-7), name
    # DPO-Iter's end of round: the reference became the policy
    assert_close(two["dpo_state"]["policy"], two["dpo_state"]["ref"], rtol=0, atol=0)
    # the vLLM push sends whole tensors under HF names, equal to the policy's weights
    assert_close(two["ppo_pushed"], state["policy"], "pushed", rtol=0, atol=0)
    # a checkpoint loaded into differently initialised models (only the main process read it) is exact
    assert_close(two["ppo_reloaded"], state, "reloaded", rtol=0, atol=0)


@pytest.mark.slow
def test_fsdp_with_bf16_mixed_precision_keeps_fp32_masters_and_bf16_accurate_gradients(tmp_path, one_process):
    single = run(tmp_path / "single_bf16", "none", "bf16", 1)
    sharded = run(tmp_path / "fsdp_bf16", "fsdp", "bf16", 2)
    assert single["ppo_master_dtypes"] == sharded["ppo_master_dtypes"] == {torch.float32}
    assert all(v.dtype == torch.float32 for v in sharded["ppo_state"]["policy"].values())
    for part in ("policy", "critic"):
        for name, exact in one_process["ppo_grads"][part].items():
            # bf16 compute: within a few bf16 roundings of the fp32 gradient, sharded or not
            for run_ in (single, sharded):
                err = float((run_["ppo_grads"][part][name] - exact).norm() / exact.norm().clamp(min=1e-12))
                assert err < 0.05, (part, name, err)
