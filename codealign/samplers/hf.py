"""``hf`` sampler: transformers ``generate`` on the live model object it is given (CPU or GPU).

The trainer passes its policy, so samples always come from the current weights, and
``Completion.token_ids`` are the exact response tokens the policy produced (PPO needs no re-tokenizing).
Prompts are tokenized as ``tokenizer(prompt).input_ids`` (the tokenizer's own special-token policy),
left-padded in batches.

On a GPU, ``static_cache=True`` uses transformers' static KV cache, and ``generate`` then compiles the
forward pass with ``torch.compile`` (``compile=False`` turns that off): plain ``generate`` is
launch-bound at small batch. ``benchmarks/sampler_throughput.py`` measures the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codealign.samplers.base import Completion, Sampler, SamplingParams, cut_at_stop


class HFSampler(Sampler):
    """Batched sampling with ``model.generate``.

    ``batch_size`` is the number of sequences (prompt x sample) per ``generate`` call. Rows are sorted
    by prompt length so padding stays small. The model's train/eval mode is restored afterwards.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, static_cache: bool = False, compile: bool = True):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.static_cache = static_cache
        self.compile = compile
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
            tokenizer.pad_token = tokenizer.eos_token

    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def sample(self, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        import torch

        if n < 1:
            raise ValueError("n must be >= 1")
        encoded = [self.tokenizer(p).input_ids for p in prompts]
        rows = sorted(((i, j) for i in range(len(prompts)) for j in range(n)), key=lambda r: (len(encoded[r[0]]), r))
        out: list[list[Completion | None]] = [[None] * n for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        # A seeded call draws from its own RNG stream and leaves the caller's (e.g. the trainer's) untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=params.seed is not None):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            try:
                for start in range(0, len(rows), self.batch_size):
                    batch = rows[start : start + self.batch_size]
                    for (i, j), completion in zip(batch, self._generate([encoded[i] for i, _ in batch], params)):
                        out[i][j] = completion
            finally:
                self.model.train(was_training)
        return out  # type: ignore[return-value]

    def _generate(self, ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        import torch

        tok = self.tokenizer
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        device = next(self.model.parameters()).device
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
        )
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        if self.static_cache:
            kwargs.update(cache_implementation="static", disable_compile=not self.compile)
        with torch.no_grad():
            generated = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
        completions = []
        for row in generated[:, width:].tolist():
            completions.append(self._finish(row, params))
        return completions

    def _finish(self, row: list[int], params: SamplingParams) -> Completion:
        """Trim padding after EOS; cut at a stop string (text without it, tokens up to the one completing it)."""
        tok = self.tokenizer
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        reason = "length"
        for pos, t in enumerate(row):
            if t in eos_ids:
                row, reason = row[: pos + 1], "stop"
                break
        text = tok.decode(row, skip_special_tokens=True)
        if params.stop:
            cut, found = cut_at_stop(text, params.stop)
            if found:
                # Shortest token prefix whose text already contains the stop string.
                for end in range(1, len(row) + 1):
                    if cut_at_stop(tok.decode(row[:end], skip_special_tokens=True), params.stop)[1]:
                        row = row[:end]
                        break
                text, reason = cut, "stop"
        return Completion(text=text, token_ids=row, finish_reason=reason)
