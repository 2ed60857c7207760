"""Shared fixtures for the eval tests: a tiny causal LM built from a config and a BPE tokenizer trained here (no downloads)."""

from __future__ import annotations

CORPUS = [
    "### Problem\nRead two numbers and print their sum.\n\n### Answer\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n",
    "### Problem\nPrint the reverse of a string.\n\n### Answer\n```python\nprint(input()[::-1])\n```\n",
    "def add(a, b):\n    return a + b\n",
] * 20


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config)


import pytest


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer): a randomly initialised 2-layer Qwen2 and a 300-token byte-level BPE."""
    tok = tiny_tokenizer()
    return tiny_model(len(tok)), tok
