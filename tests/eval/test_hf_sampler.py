"""The `hf` sampler end to end: a tiny Qwen2-shaped model from a config and a locally trained tokenizer."""

import pytest
import torch

from codealign.samplers.base import SamplingParams
from codealign.samplers.hf import HFSampler


@pytest.fixture
def lm(tiny_lm):
    return tiny_lm


def test_returns_n_completions_per_prompt_with_response_token_ids(lm):
    model, tok = lm
    prompts = ["### Problem\nPrint the reverse of a string.\n\n### Answer\n", "def add(a, b):\n"]
    sampler = HFSampler(model, tok, batch_size=3)
    out = sampler.sample(prompts, 4, SamplingParams(max_new_tokens=12, temperature=1.0, seed=0))
    assert [len(x) for x in out] == [4, 4]
    for row in out:
        for c in row:
            assert c.token_ids and len(c.token_ids) <= 12
            assert tok.pad_token_id not in c.token_ids
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "stop":
                assert c.token_ids[-1] == tok.eos_token_id
    assert model.training  # mode restored


def test_token_ids_are_what_the_model_generates_after_the_prompt(lm):
    """Greedy response ids equal a plain single-prompt generate (no padding), so PPO log-probs line up."""
    model, tok = lm
    prompts = ["def add(a, b):\n", "### Problem\nRead two numbers and print their sum.\n\n### Answer\n"]
    got = HFSampler(model, tok, batch_size=2).sample(prompts, 1, SamplingParams(max_new_tokens=8, temperature=0))
    model.eval()
    for prompt, (c,) in zip(prompts, got):
        ids = torch.tensor([tok(prompt).input_ids])
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        ref_ids = ref[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in ref_ids:
            ref_ids = ref_ids[: ref_ids.index(tok.eos_token_id) + 1]
        assert c.token_ids == ref_ids


def test_same_seed_same_samples(lm):
    model, tok = lm
    s = HFSampler(model, tok, batch_size=4)
    p = SamplingParams(max_new_tokens=10, temperature=1.0, seed=123)
    a = s.sample(["def add(a, b):\n"], 4, p)
    b = s.sample(["def add(a, b):\n"], 4, p)
    assert [c.token_ids for c in a[0]] == [c.token_ids for c in b[0]]
    assert len({tuple(c.token_ids) for c in a[0]}) > 1  # temperature 1 on a random model: samples differ
    # The caller's RNG stream is left as it was.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    s.sample(["def add(a, b):\n"], 2, p)
    assert torch.equal(torch.rand(3), expected)


def test_stop_strings_cut_text_and_tokens(lm):
    model, tok = lm
    # The untrained model emits arbitrary tokens; stop on a common character so the cut is exercised.
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=3, stop=["a", "e", "t", "\n", " "])
    out = HFSampler(model, tok, batch_size=8).sample(["def add(a, b):\n"], 8, params)[0]
    cut = [c for c in out if c.finish_reason == "stop" and c.token_ids[-1] != tok.eos_token_id]
    assert cut, "no sample hit a stop string"
    for c in cut:
        assert not any(s in c.text for s in params.stop)
        full = tok.decode(c.token_ids, skip_special_tokens=True)
        assert full.startswith(c.text) and any(s in full for s in params.stop)
        assert not any(s in tok.decode(c.token_ids[:-1], skip_special_tokens=True) for s in params.stop)


def test_static_cache_option_generates_the_same_greedy_tokens(lm):
    """The static KV cache (compiled on GPU; plain on CPU) must not change what is generated."""
    model, tok = lm
    prompts = ["def add(a, b):\n", "### Problem\nPrint the reverse of a string.\n\n### Answer\n"]
    params = SamplingParams(max_new_tokens=8, temperature=0)
    plain = HFSampler(model, tok, batch_size=2).sample(prompts, 1, params)
    static = HFSampler(model, tok, batch_size=2, static_cache=True).sample(prompts, 1, params)
    assert [c.token_ids for (c,) in plain] == [c.token_ids for (c,) in static]
