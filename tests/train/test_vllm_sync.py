"""Pushing the policy's weights into a vLLM engine each round.

vLLM cannot run on these machines (no GPU), so the engine here is a stand-in with what the trainer uses
of ``codealign.samplers.vllm.VLLMSampler``: ``dtype``, ``load_weights(named_tensors)`` and
``sample(prompts, n, params)``. What is tested is the trainer's side: which tensors it sends (whole, in
the engine's dtype), under which names, and that sampling then goes through the engine.
"""

import sys
from pathlib import Path

import torch

from codealign.samplers.base import Completion, SamplingParams
from codealign.train.config import SamplingConfig
from codealign.train.rollouts import PolicySampler

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import tiny_lm  # noqa: E402


class StandInEngine:
    def __init__(self, dtype=None):
        self.dtype = dtype
        self.loaded = []
        self.sampled = []

    def load_weights(self, named_tensors):
        self.loaded.append({name: t.clone() for name, t in named_tensors})

    def sample(self, prompts, n, params):
        self.sampled.append((list(prompts), n, params))
        return [[Completion(text="x", token_ids=[1]) for _ in range(n)] for _ in prompts]


def test_sync_pushes_every_weight_of_the_current_policy_under_hf_names():
    model = tiny_lm()
    engine = StandInEngine()
    sampler = PolicySampler(SamplingConfig(sampler="vllm"), tokenizer=None, engine=engine)
    sampler.sync(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an update
    sampler.sync(model)
    assert len(engine.loaded) == 2
    expected = model.state_dict()
    assert set(engine.loaded[1]) == set(expected) and "model.embed_tokens.weight" in engine.loaded[1]
    assert all(torch.equal(engine.loaded[1][k], v) for k, v in expected.items())
    assert not torch.equal(engine.loaded[0]["model.embed_tokens.weight"], engine.loaded[1]["model.embed_tokens.weight"])
    out = sampler.sample(model, ["p1", "p2"], 3, SamplingParams(max_new_tokens=4))
    assert len(out) == 2 and len(out[0]) == 3 and engine.sampled[0][1] == 3


def test_lora_policy_is_merged_before_the_push():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_lm(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    engine = StandInEngine()
    PolicySampler(SamplingConfig(sampler="vllm"), tokenizer=None, engine=engine).sync(model)
    pushed = engine.loaded[0]
    assert not any("lora" in k for k in pushed)
    merged = model.merge_and_unload().state_dict()  # (merging the original after the push is fine here)
    assert set(pushed) == set(merged)
    assert all(torch.allclose(pushed[k], v, atol=1e-6) for k, v in merged.items())


def test_vllm_without_an_engine_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="engine"):
        PolicySampler(SamplingConfig(sampler="vllm"), tokenizer=None)


def test_sync_sends_fp32_master_weights_cast_to_the_engine_dtype():
    model = tiny_lm()
    engine = StandInEngine(dtype="bfloat16")
    PolicySampler(SamplingConfig(sampler="vllm"), tokenizer=None, engine=engine).sync(model)
    pushed = engine.loaded[0]
    assert {t.dtype for t in pushed.values()} == {torch.bfloat16}
    assert all(torch.equal(pushed[k], v.to(torch.bfloat16)) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32  # the master weights are untouched
