"""The offline ``tiny`` preset: a locally trained tokenizer and a config-built model, loaded like a hub model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from codealign.train import tiny
from codealign.train.tiny import TinyConfig, build_tiny, load_tiny

CORPUS = [
    "### Problem\nRead integers from a line. Keep the even ones. Print the sum.\n### Answer\n",
    "```python\na = list(map(int, input().split()))\nb = [x for x in a if x % 2 == 0]\nprint(sum(b))\n```",
    "### Problem\nRead integers from a line. Square each. Print the maximum.\n### Answer\n",
    "```python\na = list(map(int, input().split()))\nb = [x * x for x in a]\nprint(max(b))\n```",
] * 3
SMALL = TinyConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def test_build_writes_a_directory_the_auto_classes_load(tmp_path):
    path = build_tiny(CORPUS, seed=0, config=SMALL, cache_dir=tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer) <= SMALL.vocab_size
    assert tokenizer.eos_token == tiny.EOS_TOKEN and tokenizer.pad_token == tiny.PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    # no BOS: what the sampler tokenizes is exactly the BPE pieces of the prompt
    assert tokenizer(CORPUS[0]).input_ids == tokenizer(CORPUS[0], add_special_tokens=False).input_ids
    for text in CORPUS[:2] + ["unseen text: ünïcode & 12345\n\tok"]:
        assert tokenizer.decode(tokenizer(text).input_ids) == text  # byte-level: lossless
    # merges learnt from the corpus make code far shorter than bytes
    assert len(tokenizer(CORPUS[1]).input_ids) < 0.6 * len(CORPUS[1].encode())


def test_default_config_is_about_a_million_parameters(tmp_path):
    model, tokenizer = load_tiny(CORPUS, seed=0, cache_dir=tmp_path)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 3e6
    ids = tokenizer(CORPUS[0], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 5) or out[0, -1].item() == tokenizer.eos_token_id


def test_build_is_deterministic_given_seed_and_differs_across_seeds(tmp_path):
    a = AutoModelForCausalLM.from_pretrained(build_tiny(CORPUS, seed=3, config=SMALL, cache_dir=tmp_path / "a"))
    b = AutoModelForCausalLM.from_pretrained(build_tiny(CORPUS, seed=3, config=SMALL, cache_dir=tmp_path / "b"))
    c = AutoModelForCausalLM.from_pretrained(build_tiny(CORPUS, seed=4, config=SMALL, cache_dir=tmp_path / "c"))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    ta = AutoTokenizer.from_pretrained(tmp_path / "a" / next((tmp_path / "a").iterdir()).name)
    tb = AutoTokenizer.from_pretrained(tmp_path / "b" / next((tmp_path / "b").iterdir()).name)
    assert ta.get_vocab() == tb.get_vocab()


def test_second_build_reuses_the_cache(tmp_path, monkeypatch):
    first = build_tiny(CORPUS, seed=0, config=SMALL, cache_dir=tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached build should not train a tokenizer again")

    monkeypatch.setattr(tiny, "train_tokenizer", no_training)
    assert build_tiny(CORPUS, seed=0, config=SMALL, cache_dir=tmp_path) == first
    # a different corpus is a different entry (and would need a build)
    with pytest.raises(AssertionError, match="should not train"):
        build_tiny(CORPUS + ["more text"], seed=0, config=SMALL, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [first.name]


def test_cache_dir_defaults_to_env_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEALIGN_CACHE", str(tmp_path / "cache"))
    path = build_tiny(CORPUS, seed=0, config=SMALL)
    assert path.parent == tmp_path / "cache"


def test_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="non-empty corpus"):
        build_tiny([], cache_dir=tmp_path)
