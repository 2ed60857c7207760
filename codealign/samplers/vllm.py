"""``vllm`` sampler: an in-process ``vllm.LLM`` engine (optional extra: ``pip install codealign[vllm]``).

Uses vLLM's documented offline API only: ``vllm.LLM(model=..., seed=..., enable_prefix_caching=True,
**engine_kwargs)``, ``LLM.generate(prompts, vllm.SamplingParams(n=..., temperature=..., top_p=...,
max_tokens=..., seed=..., stop=...))`` returning one ``RequestOutput`` per prompt whose ``outputs`` are
``CompletionOutput(index, text, token_ids, finish_reason)``. All n samples of a prompt share its prefix
in the KV cache (prefix caching); the seed makes a run repeatable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from codealign.samplers.base import Completion, Sampler, SamplingParams


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "the vllm sampler needs vLLM, which is not installed: `pip install 'codealign[vllm]'` on a machine "
            "with a supported GPU, or use --sampler hf (transformers) or --sampler openai (a running server)"
        ) from e
    return vllm


class VLLMSampler(Sampler):
    """Sampling with an in-process vLLM engine.

    ``model``: a HF name or local path (an engine is created), or an existing ``vllm.LLM``.
    ``engine_kwargs`` go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``, ``dtype``, ``max_model_len``).
    """

    def __init__(self, model: Any, *, seed: int = 0, enable_prefix_caching: bool = True, **engine_kwargs: Any):
        self._vllm = _import_vllm()
        if isinstance(model, str):
            self.llm = self._vllm.LLM(model=model, seed=seed, enable_prefix_caching=enable_prefix_caching, **engine_kwargs)
        else:
            self.llm = model

    def sample(self, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        sp = self._vllm.SamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        outputs = self.llm.generate(list(prompts), sp, use_tqdm=False)
        result = []
        for out in outputs:
            ordered = sorted(out.outputs, key=lambda o: o.index)
            result.append(
                [Completion(text=o.text, token_ids=list(o.token_ids), finish_reason=o.finish_reason) for o in ordered]
            )
        return result

    def context_length(self) -> int | None:
        try:
            return int(self.llm.llm_engine.model_config.max_model_len)
        except (AttributeError, TypeError, ValueError):
            return None

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Push policy weights (``(name, tensor)`` pairs, HF parameter names) into the engine.

        Goes through the model object of the engine's driver worker and calls its ``load_weights``
        (vLLM model classes map HF names, fused QKV and so on). The prefix cache is reset afterwards,
        since cached KV blocks were computed with the old weights.
        """
        model = self._engine_model()
        model.load_weights(list(named_tensors))
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def _engine_model(self) -> Any:
        engine = self.llm.llm_engine
        executor = getattr(engine, "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        # vLLM wraps the worker in a WorkerWrapperBase in some versions (``.worker``).
        worker = getattr(worker, "worker", worker)
        runner = getattr(worker, "model_runner", None)
        model = getattr(runner, "model", None)
        if model is None:
            raise RuntimeError(
                "this vLLM engine does not expose llm_engine.model_executor.driver_worker.model_runner.model "
                "(multi-process or V1 engine); start it with a single in-process worker to sync weights"
            )
        return model
