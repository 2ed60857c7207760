"""The ``tiny`` preset: a small causal LM and a locally trained tokenizer, so training runs offline.

No weights or tokenizers can be downloaded here, so the preset builds both from scratch:

* a byte-level BPE tokenizer trained with the HF ``tokenizers`` library on the task corpus (prompts
  and reference solutions), wrapped as a ``PreTrainedTokenizerFast``;
* a Llama-shaped causal LM (``LlamaConfig``: RoPE, SwiGLU, RMSNorm) of about a million parameters,
  randomly initialised from ``seed``.

Both are written with ``save_pretrained`` and then loaded back through ``AutoTokenizer`` /
``AutoModelForCausalLM.from_pretrained``, the same code path a hub model takes. The directory is
cached under a key of (config, seed, corpus), so repeated runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
#: Bump when the build procedure changes, so stale caches are not reused.
BUILD_VERSION = 1


class TinyConfig(BaseModel):
    """Shape of the tiny model and its tokenizer (defaults: ~1.0M parameters, ~0.5 s/SFT step of 32)."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(default=512, ge=300, description="BPE vocabulary size target (bytes + merges + specials).")
    hidden_size: int = Field(default=128, gt=0, description="Model width.")
    intermediate_size: int = Field(default=384, gt=0, description="SwiGLU MLP width.")
    num_hidden_layers: int = Field(default=4, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    max_position_embeddings: int = Field(default=256, gt=0, description="Longest prompt + response, tokens.")


def default_cache_dir() -> Path:
    """``$CODEALIGN_CACHE`` or ``~/.cache/codealign``."""
    return Path(os.environ.get("CODEALIGN_CACHE", Path.home() / ".cache" / "codealign"))


def content_key(header: str, texts: Sequence[str]) -> str:
    """16 hex digits naming a cache entry: sha256 of ``header`` followed by each text's own digest."""
    h = hashlib.sha256(header.encode())
    for text in texts:
        h.update(hashlib.sha256(text.encode()).digest())
    return h.hexdigest()[:16]


def _cache_key(corpus: Sequence[str], seed: int, config: TinyConfig) -> str:
    return content_key(json.dumps({"v": BUILD_VERSION, "seed": seed, "config": config.model_dump()}, sort_keys=True), corpus)


def train_tokenizer(corpus: Sequence[str], vocab_size: int):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` (no BOS; EOS and pad tokens).

    Byte-level, so any text round-trips; GPT-2's pre-tokenizer splits words, numbers and punctuation,
    so merges stay within a code token and a held-out combination is spelled with the same pieces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, clean_up_tokenization_spaces=False
    )


def build_tiny(
    corpus: Sequence[str], *, seed: int = 0, config: TinyConfig | None = None, cache_dir: str | Path | None = None
) -> Path:
    """Build (or find in the cache) the tiny model + tokenizer for ``corpus``; return its directory.

    The directory holds ``config.json``, the weights and the tokenizer files, loadable with
    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.
    Deterministic: the same corpus, seed and config give the same tokenizer and weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = config or TinyConfig()
    if not corpus:
        raise ValueError("build_tiny needs a non-empty corpus to train the tokenizer on")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"tiny-{_cache_key(corpus, seed, config)}"
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path

    tokenizer = train_tokenizer(corpus, config.vocab_size)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed only this build, without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None

    save_cache_entry(model, tokenizer, path)
    return path


def save_cache_entry(model, tokenizer, dest: Path) -> None:
    """Save ``model`` and ``tokenizer`` to the cache directory ``dest``, atomically: written to a
    scratch directory beside it and renamed, so a killed build never leaves a half entry."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        try:
            scratch.rename(dest)
        except OSError:  # another process built the same entry first: same inputs, same files
            if not (dest / "config.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_tiny(
    corpus: Sequence[str], *, seed: int = 0, config: TinyConfig | None = None, cache_dir: str | Path | None = None
):
    """``(model, tokenizer)`` of the tiny preset, loaded with the ``Auto*.from_pretrained`` code path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny(corpus, seed=seed, config=config, cache_dir=cache_dir)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
