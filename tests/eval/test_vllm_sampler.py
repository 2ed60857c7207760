"""The `vllm` adapter against a stand-in for vLLM's documented offline API.

vLLM cannot run on these machines (no GPU, not installed), so these tests install a stand-in ``vllm``
module with the documented surface the adapter uses — ``LLM(model, seed, enable_prefix_caching, ...)``,
``LLM.generate(prompts, SamplingParams, use_tqdm)`` -> ``RequestOutput.outputs`` of
``CompletionOutput(index, text, token_ids, finish_reason)``, ``llm_engine.model_executor.driver_worker.
model_runner.model.load_weights`` and ``LLM.reset_prefix_cache`` — and check what the adapter sends and
how it maps the answers. They do not show that a real engine behaves this way.
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
        self.resets = 0
        self.net = FakeModel()
        runner = types.SimpleNamespace(model=self.net)
        worker = types.SimpleNamespace(model_runner=runner)
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        return [
            FakeRequestOutput(p, [FakeCompletionOutput(i, f"{p}:{i}", (i, len(p)), "stop") for i in reversed(range(sampling_params.n))])
            for p in prompts
        ]

    def reset_prefix_cache(self):
        self.resets += 1


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
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


def test_load_weights_reaches_the_engine_model_and_resets_the_prefix_cache(fake_vllm):
    from codealign.samplers.vllm import VLLMSampler

    s = VLLMSampler("m")
    weights = {"model.embed_tokens.weight": torch.ones(2, 2), "lm_head.weight": torch.zeros(2, 2)}
    s.load_weights(weights.items())
    llm = FakeLLM.instances[0]
    assert set(llm.net.loaded) == set(weights) and torch.equal(llm.net.loaded["lm_head.weight"], weights["lm_head.weight"])
    assert llm.resets == 1


def test_missing_vllm_is_a_clear_error(monkeypatch):
    from codealign.samplers.vllm import VLLMSampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match="pip install 'codealign\\[vllm\\]'"):
        VLLMSampler("m")
