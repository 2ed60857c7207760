"""The `vllm` adapter against a stand-in for vLLM's documented offline API.

vLLM cannot run on these machines (no GPU, not installed), so these tests install a stand-in ``vllm``
module with the surface the adapter uses, as vLLM 0.25-0.33 define it — ``vllm.__version__``,
``LLM(model, seed, enable_prefix_caching, distributed_executor_backend, tensor_parallel_size,
gpu_memory_utilization, max_model_len, dtype, enable_sleep_mode)``, ``LLM.generate(prompts,
SamplingParams, use_tqdm)`` -> ``RequestOutput.outputs`` of ``CompletionOutput(index, text, token_ids,
finish_reason)``, ``LLM.sleep(level)``, ``LLM.wake_up(tags)``, ``LLM.collective_rpc("reload_weights",
kwargs={"weights_iterator", "is_checkpoint_format"})`` (the worker's in-place reload, which feeds the
model's ``load_weights``) and ``LLM.reset_prefix_cache`` — and check what the adapter sends, in which
order, and how it maps the answers. They do not show that a real engine behaves this way.
"""

import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from codealign.samplers.base import SamplingParams


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None
    stop: list | None = None


@dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: tuple
    finish_reason: str


@dataclass
class FakeRequestOutput:
    prompt: str
    outputs: list


@dataclass
class FakeModel:
    loaded: dict = field(default_factory=dict)

    def load_weights(self, weights):
        for name, tensor in weights:
            self.loaded[name] = tensor


class FakeLLM:
    instances: list = []

    def __init__(self, model, seed=0, enable_prefix_caching=False, **kwargs):
        self.model, self.seed, self.prefix_caching, self.kwargs = model, seed, enable_prefix_caching, kwargs
        self.calls = []
        self.log = []  # every engine call, in order
        self.resets = 0
        self.net = FakeModel()
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        self.log.append("generate")
        return [
            FakeRequestOutput(p, [FakeCompletionOutput(i, f"{p}:{i}", (i, len(p)), "stop") for i in reversed(range(sampling_params.n))])
            for p in prompts
        ]

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        assert method == "reload_weights" and kwargs["is_checkpoint_format"] is True
        self.log.append("reload_weights")
        self.net.load_weights(kwargs["weights_iterator"])  # what Worker.reload_weights does with the iterator
        return [None]

    def sleep(self, level=1, mode="abort"):
        self.log.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.log.append(f"wake_up({','.join(tags)})")
        return True

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.resets += 1
        self.log.append("reset_prefix_cache")
        return True


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.30.0"
    mod.LLM = FakeLLM
    mod.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    FakeLLM.instances = []
    return mod


def test_sample_maps_params_and_orders_outputs(fake_vllm):
    from codealign.samplers.vllm import VLLMSampler

    s = VLLMSampler("Qwen/Qwen2.5-Coder-1.5B", seed=7, gpu_memory_utilization=0.5)
    llm = FakeLLM.instances[0]
    assert llm.model == "Qwen/Qwen2.5-Coder-1.5B" and llm.seed == 7 and llm.prefix_caching
    assert llm.kwargs == {"gpu_memory_utilization": 0.5}
    out = s.sample(["ab", "c"], 3, SamplingParams(max_new_tokens=9, temperature=0.6, top_p=0.9, seed=1, stop=["```\n"]))
    _, sp = llm.calls[0]
    assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.seed, sp.stop) == (3, 0.6, 0.9, 9, 1, ["```\n"])
    assert [[c.text for c in row] for row in out] == [["ab:0", "ab:1", "ab:2"], ["c:0", "c:1", "c:2"]]
    assert out[0][1].token_ids == [1, 2] and out[0][1].finish_reason == "stop"


def test_load_weights_reloads_in_place_through_the_worker_and_resets_the_prefix_cache(fake_vllm):
    from codealign.samplers.vllm import VLLMSampler

    s = VLLMSampler("m")
    weights = {"model.embed_tokens.weight": torch.ones(2, 2), "lm_head.weight": torch.zeros(2, 2)}
    s.load_weights(weights.items())
    llm = FakeLLM.instances[0]
    assert set(llm.net.loaded) == set(weights) and torch.equal(llm.net.loaded["lm_head.weight"], weights["lm_head.weight"])
    assert llm.log == ["reload_weights", "reset_prefix_cache"]


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables before the test, and none left after it (the colocated engine sets them, and a
    WORLD_SIZE left behind would make a later Accelerator wait for other processes)."""
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, so the teardown restores the variable as it was
        monkeypatch.delenv(key)


def test_colocated_engine_joins_the_training_processes_with_per_process_seeds(fake_vllm, clean_env):
    import os

    from codealign.samplers.vllm import VLLMSampler

    seeds = {}
    for rank in range(4):
        for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            os.environ.pop(key, None)
        VLLMSampler.colocated("m", rank=rank, local_rank=rank, world=4, seed=10, tensor_parallel_size=2,
                              gpu_memory_utilization=0.25, max_model_len=2048, dtype="bfloat16", sleep=True)
        llm = FakeLLM.instances[-1]
        seeds[rank] = llm.seed
        assert llm.kwargs == {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 2,
                              "gpu_memory_utilization": 0.25, "dtype": "bfloat16", "enable_sleep_mode": True,
                              "max_model_len": 2048}
        assert os.environ["RANK"] == str(rank) and os.environ["WORLD_SIZE"] == "4" and os.environ["MASTER_PORT"]
        assert llm.log == ["sleep(1)"]  # asleep until the first weight push
    # the two processes of a tensor-parallel group share an engine and its seed; groups differ
    assert seeds == {0: 10, 1: 10, 2: 11, 3: 11}
    with pytest.raises(ValueError, match="must divide"):
        VLLMSampler.colocated("m", rank=0, local_rank=0, world=4, tensor_parallel_size=3)


def test_sleep_and_wake_frame_the_weight_push_and_each_sampling_call(fake_vllm, clean_env):
    from codealign.samplers.vllm import VLLMSampler

    s = VLLMSampler.colocated("m", rank=0, local_rank=0, world=1)
    llm = FakeLLM.instances[0]
    params = SamplingParams(max_new_tokens=4)
    s.load_weights([("lm_head.weight", torch.ones(1))])  # after an update: weights back, then replaced
    s.sample(["a"], 1, params)  # KV cache back only now, and freed again for the next update
    s.sample(["b"], 1, params)  # no push in between (e.g. evaluation): wake everything
    assert llm.log == [
        "sleep(1)",
        "wake_up(weights)", "reload_weights", "reset_prefix_cache",
        "wake_up(kv_cache)", "generate", "sleep(1)",
        "wake_up(weights)", "wake_up(kv_cache)", "generate", "sleep(1)",
    ]


@pytest.mark.parametrize("version,ok", [("0.24.1", False), ("0.25.0", True), ("0.33.2", True), ("0.34.0", False), ("0.6.3", False)])
def test_vllm_versions_outside_the_supported_range_are_refused(fake_vllm, version, ok):
    from codealign.samplers.vllm import SUPPORTED, VLLMSampler

    fake_vllm.__version__ = version
    if ok:
        VLLMSampler("m")
    else:
        with pytest.raises(RuntimeError, match=f"vLLM {version} is not supported.*{SUPPORTED}"):
            VLLMSampler("m")


def test_missing_vllm_is_a_clear_error(monkeypatch):
    from codealign.samplers.vllm import VLLMSampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match="pip install 'codealign\\[vllm\\]'"):
        VLLMSampler("m")


def test_the_vllm_extra_pins_the_supported_range():
    import tomllib
    from pathlib import Path

    from codealign.samplers.vllm import SUPPORTED

    extra = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    assert extra == [f"vllm{SUPPORTED}"]
