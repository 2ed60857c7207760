"""Warm-start SFT: teach a fresh model the prompt -> fenced-program format on reference solutions.

Loss on response tokens only (the prompt is context, not a target). Kept deliberately short: the
``tiny`` default stops while sampling at temperature 1.0 still fails often, so the later gains of
``codealign train`` come from execution rewards, not from more imitation.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

IGNORE_INDEX = -100


class SFTConfig(BaseModel):
    """Warm-start SFT settings (defaults tuned for the ``tiny`` preset on 2 CPU cores)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=200, ge=0, description="Optimizer steps (tiny preset: 200 leaves held-out pass@1 ~0.15-0.2 at T=1).")
    batch_size: int = Field(default=32, gt=0, description="Sequences per step.")
    lr: float = Field(default=2e-3, gt=0, description="Peak AdamW learning rate (linear warmup, then cosine decay).")
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = 0


def format_response(code: str, eos_token: str | None = None) -> str:
    """The completion the model is taught to write: one fenced Python block (then EOS, if given)."""
    return f"```python\n{code.rstrip()}\n```" + (eos_token or "")


def response_ids(tokenizer, response: str) -> list[int]:
    """A completion's token ids as the model should emit them: tokenized on its own, then EOS."""
    return tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def _encode(tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example; prompt and response tokenized apart, as a sampler sees them."""
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        r = response_ids(tokenizer, response)
        out.append((p + r, [IGNORE_INDEX] * len(p) + r))
    return out


def sft(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], config: SFTConfig | None = None,
        log: Callable[[dict], None] | None = None, mixed_precision: str = "no"):
    """Fine-tune ``model`` in place on (prompt, response) pairs, on the device it is on; return it in
    eval mode.

    ``responses`` are full completions without EOS (EOS is appended as a target). ``log`` receives
    ``{"sft_step", "sft_loss", "sft_lr"}`` every 10 steps. ``mixed_precision="bf16"``: bf16 compute on the
    model's fp32 weights (see codealign/train/precision.py).
    """
    import math

    import torch

    config = config or SFTConfig()
    if not prompts:
        raise ValueError("sft needs at least one (prompt, response) pair")
    examples = _encode(tokenizer, prompts, responses)
    rng = random.Random(config.seed)  # batch order; nothing else is random (no dropout in the tiny model)
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    from codealign.train.precision import check_master_weights, compute_dtype

    check_master_weights(model, "SFT model")
    device = next(model.parameters()).device
    dtype = compute_dtype(mixed_precision)
    model.train()
    order: list[int] = []
    for step in range(config.steps):
        if len(order) < config.batch_size:
            extra = list(range(len(examples)))
            rng.shuffle(extra)
            order += extra
        batch = [examples[i] for i in order[: config.batch_size]]
        del order[: config.batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (x, y) in enumerate(batch):
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        for group in optim.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optim.step()
        if log is not None and (step % 10 == 0 or step == config.steps - 1):
            log({"sft_step": step, "sft_loss": loss.item(), "sft_lr": lr_at(step)})
    optim.zero_grad(set_to_none=True)  # the last batch's gradient must not reach whatever trains next
    model.eval()
    return model


_run_sft = sft  # warm_start_tiny's ``sft`` argument (the settings) shadows the function's name


def _sft_key(base: Path, prompts: Sequence[str], responses: Sequence[str], config: SFTConfig) -> str:
    from codealign.train.tiny import content_key

    return content_key(f"{base.name}|{config.model_dump_json()}", [*prompts, *responses])


def warm_start_tiny(
    train_problems,
    prompt_fn: Callable,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    sft: SFTConfig | None = None,
    tiny=None,
    log: Callable[[str], None] = print,
):
    """The ``tiny`` starting policy: build the model + tokenizer on the training corpus, then SFT it.

    The corpus is ``prompt_fn(problem)`` and :func:`format_response` of each problem's first Python
    reference solution (training problems only: held-out problems never reach the tokenizer or the
    SFT). The SFT'd model is cached beside the base model, keyed by (base, corpus, SFT settings), so
    a repeated run loads it instead of training again. Returns ``(model, tokenizer)`` in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codealign.train.tiny import build_tiny, save_cache_entry

    config = (sft or SFTConfig()).model_copy(update={"seed": seed})
    with_solution = [p for p in train_problems if p.solutions.get("python")]
    if not with_solution:
        raise ValueError("warm_start_tiny needs training problems with a Python reference solution")
    prompts = [prompt_fn(p) for p in with_solution]
    responses = [format_response(p.solutions["python"][0]) for p in with_solution]
    base = build_tiny(prompts + responses, seed=seed, config=tiny, cache_dir=cache_dir)
    tuned = base / f"sft-{_sft_key(base, prompts, responses, config)}"
    if (tuned / "config.json").exists():
        log(f"warm start: cached SFT model {tuned}")
        model = AutoModelForCausalLM.from_pretrained(tuned)
        model.eval()
        return model, AutoTokenizer.from_pretrained(tuned)

    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    log(f"warm start: SFT for {config.steps} steps on {len(prompts)} reference solutions")
    model = _run_sft(model, tokenizer, prompts, responses, config)
    save_cache_entry(model, tokenizer, tuned)
    return model, tokenizer
