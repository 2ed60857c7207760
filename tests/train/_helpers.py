"""Small real models and rollouts for the trainer's tests (no downloads: built from a config)."""

from __future__ import annotations

import torch

from codealign.train.rollouts import Rollout


def tiny_lm(seed: int = 0, vocab: int = 24, hidden: int = 16, layers: int = 2):
    """A randomly initialised Llama-shaped causal LM with a few thousand parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
    )
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def rollout(prompt, response, reward, passed=None, judged=True, pid="p0") -> Rollout:
    return Rollout(
        problem_id=pid, prompt_ids=list(prompt), response_ids=list(response), text="", code="x",
        result=None, judged=judged, reward=float(reward), passed=bool(reward > 0) if passed is None else passed,
    )


def cpu_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for torch.distributed.run's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
