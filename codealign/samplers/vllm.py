"""``vllm`` sampler: an in-process ``vllm.LLM`` engine (optional extra: ``pip install codealign[vllm]``).

Sampling uses vLLM's documented offline API: ``vllm.LLM(model=..., seed=..., enable_prefix_caching=True,
**engine_kwargs)``, ``LLM.generate(prompts, vllm.SamplingParams(n=..., temperature=..., top_p=...,
max_tokens=..., seed=..., stop=...))`` returning one ``RequestOutput`` per prompt whose ``outputs`` are
``CompletionOutput(index, text, token_ids, finish_reason)``. All n samples of a prompt share its prefix
in the KV cache (prefix caching); the seed makes a run repeatable.

For training, :meth:`VLLMSampler.colocated` builds the engine the way current vLLM supports inside a
training loop (TRL's colocate mode works the same way): one engine per training process (per group of
``tensor_parallel_size`` processes), ``distributed_executor_backend="external_launcher"`` so the engine
joins the trainer's own processes and runs in-process, per-process seeds, a configurable share of GPU
memory and context length, and sleep mode: after each sampling call the engine sleeps at level 1 (KV
cache freed, its weights offloaded to CPU) so the update has the memory; before the next sampling the
weights are woken, replaced (:meth:`VLLMSampler.load_weights`: ``collective_rpc("reload_weights",
weights_iterator=...)``, the worker's in-place reload; in-process, so tensors are passed by reference)
and then the KV cache is woken.

Supported vLLM: :data:`SUPPORTED` (the ``vllm`` extra). The calls above were read from the sources of
vLLM 0.25.0 and 0.33.0; they have NOT been run in this repository (no GPU here): the tests check them
against a stand-in module. Other versions are refused with a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from codealign.samplers.base import Completion, Sampler, SamplingParams

#: vLLM versions whose API this adapter (and codealign/samplers/vllm_server.py) is written against.
SUPPORTED = ">=0.25,<0.34"


def check_version(version: str) -> None:
    """Raise a clear error for a vLLM version outside :data:`SUPPORTED`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    if Version(version) not in SpecifierSet(SUPPORTED):
        raise RuntimeError(
            f"vLLM {version} is not supported: codealign's vllm adapter is written against vLLM {SUPPORTED} "
            f"(external launcher, LLM.sleep/wake_up, collective_rpc('reload_weights'), the server's /collective_rpc); "
            f"install a supported version with pip install 'codealign[vllm]'"
        )


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "the vllm sampler needs vLLM, which is not installed: `pip install 'codealign[vllm]'` on a machine "
            "with a supported GPU, or use --sampler hf (transformers) or --sampler openai (a running server)"
        ) from e
    check_version(vllm.__version__)
    return vllm


class VLLMSampler(Sampler):
    """Sampling with an in-process vLLM engine.

    ``model``: a HF name or local path (an engine is created), or an existing ``vllm.LLM``.
    ``engine_kwargs`` go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``, ``dtype``, ``max_model_len``).
    ``sleep``: sleep (level 1) after every :meth:`sample` and wake before the next use (needs
    ``enable_sleep_mode=True`` in the engine). ``tp_group``: the torch.distributed group of processes
    sharing this engine (tensor parallel): they sample their prompts together.
    """

    def __init__(self, model: Any, *, seed: int = 0, enable_prefix_caching: bool = True, sleep: bool = False,
                 tp_group: Any = None, **engine_kwargs: Any):
        self._vllm = _import_vllm()
        if isinstance(model, str):
            self.llm = self._vllm.LLM(model=model, seed=seed, enable_prefix_caching=enable_prefix_caching, **engine_kwargs)
        else:
            self.llm = model
        self.sleep_after_sampling = sleep
        self.tp_group = tp_group
        self.dtype = engine_kwargs.get("dtype")
        self._asleep: list[str] = []  # memory tags still asleep, woken in this order

    @classmethod
    def colocated(
        cls,
        model: str,
        *,
        rank: int,
        local_rank: int,
        world: int,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        dtype: str = "bfloat16",
        sleep: bool = True,
        tp_group: Any = None,
    ) -> "VLLMSampler":
        """The training engine of process ``rank`` of ``world`` (see the module docstring).

        Processes ``tensor_parallel_size * k ... tensor_parallel_size * (k + 1) - 1`` share engine k and its
        seed ``seed + k``; different groups sample with different seeds. Not run here (no GPU)."""
        if world % tensor_parallel_size:
            raise ValueError(f"sampling.vllm.tensor_parallel_size {tensor_parallel_size} must divide the {world} processes")
        # the external launcher joins the processes torchrun / accelerate started (env:// rendezvous)
        for key, value in (("RANK", rank), ("LOCAL_RANK", local_rank), ("WORLD_SIZE", world), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, str(value))
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        kwargs: dict[str, Any] = dict(
            distributed_executor_backend="external_launcher",
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enable_sleep_mode=sleep,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        engine = cls(model, seed=seed + rank // tensor_parallel_size, sleep=sleep, tp_group=tp_group, **kwargs)
        if sleep:  # asleep until the first weight push: the policy is built and placed meanwhile
            engine._sleep()
        return engine

    def sample(self, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        self._wake()
        mine = len(prompts)
        if self.tp_group is not None:  # the group's processes share one engine: sample all their prompts together
            prompts, params, offset = _gather_group(list(prompts), params, self.tp_group)
        sp = self._vllm.SamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        outputs = self.llm.generate(list(prompts), sp, use_tqdm=False)
        if self.sleep_after_sampling:
            self._sleep()
        if self.tp_group is not None:
            outputs = outputs[offset : offset + mine]
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
        """Replace the engine's weights with ``(name, tensor)`` pairs in HF checkpoint names and format
        (vLLM's model classes map them: fused QKV, tied embeddings...). Goes through the worker's in-place
        reload (``collective_rpc("reload_weights", weights_iterator=...)``), which needs an in-process engine
        (the external launcher of :meth:`colocated`). The prefix cache is reset: its KV blocks were computed
        with the old weights."""
        if "weights" in self._asleep:
            self.llm.wake_up(tags=["weights"])
            self._asleep.remove("weights")
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def _sleep(self) -> None:
        self.llm.sleep(level=1)  # level 1 keeps the buffers a checkpoint does not hold (level 2 would drop them)
        self._asleep = ["weights", "kv_cache"]

    def _wake(self) -> None:
        for tag in list(self._asleep):
            self.llm.wake_up(tags=[tag])
            self._asleep.remove(tag)


def _gather_group(prompts: list[str], params: SamplingParams, group: Any):
    """All prompts of the processes in ``group``, the group leader's sampling params (one seed per
    engine), and where this process's prompts start."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, (prompts, params), group=group)
    me = dist.get_rank(group)
    offset = sum(len(p) for p, _ in parts[:me])
    return [q for p, _ in parts for q in p], parts[0][1], offset


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
