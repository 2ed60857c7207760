"""vLLM server mode for training: sample from a running vLLM server on separate GPUs, and push the
policy's weights to it after every update.

One mechanism, vLLM's own (present in every version of :data:`codealign.samplers.vllm.SUPPORTED`):

1. start the server with its development endpoints on, serving the starting policy::

       VLLM_SERVER_DEV_MODE=1 vllm serve Qwen/Qwen2.5-Coder-1.5B-Instruct --dtype bfloat16 --port 8000

2. the trainer's main process writes the policy (HF names, LoRA merged, cast to the serving dtype) as a
   safetensors checkpoint into a fresh directory under ``weights_dir``, which the server must be able to
   read (same machine, or a shared filesystem);
3. ``POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR, "is_checkpoint_format":
   true}}``: every server worker reloads its shard of the weights from DIR in place
   (``Worker.reload_weights`` -> ``GPUModelRunner.reload_weights``);
4. ``POST /reset_prefix_cache``: cached KV blocks were computed with the old weights.

The other processes wait at a barrier until the push is done. Sampling goes through the
OpenAI-compatible ``/v1/completions`` with ``return_token_ids`` so PPO gets the exact sampled tokens.
A file push costs a write and a read of the weights (~3 GB for 1.5B in bf16) per update; NCCL-based
pushes (vLLM's newer weight-transfer engines, TRL's ``vllm-serve``) avoid it but their API changed
across the supported versions. Not run here (no GPU): tests use a stand-in server on 127.0.0.1.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable

from codealign.samplers.base import Completion, Sampler, SamplingParams
from codealign.samplers.openai import OpenAISampler
from codealign.samplers.vllm import check_version

_DTYPES = {"bfloat16", "float16", "float32"}


class VLLMServerSampler(Sampler):
    """Samples from the vLLM server at ``base_url`` (served model name ``model``); :meth:`load_weights`
    pushes new weights through ``weights_dir``. ``is_writer``: this process pushes (the main one);
    ``barrier``: called by every process after a push. Times are seconds."""

    def __init__(self, base_url: str, model: str, weights_dir: str | Path, *, dtype: str = "bfloat16", is_writer: bool = True,
                 barrier: Callable[[], None] | None = None, timeout_s: float = 600.0, concurrency: int = 16):
        import httpx

        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r}: use one of {sorted(_DTYPES)}")
        self.base = base_url.rstrip("/").removesuffix("/v1")
        self.weights_dir = Path(weights_dir)
        self.dtype, self.is_writer, self.barrier = dtype, is_writer, barrier or (lambda: None)
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))
        try:
            version = self._http.get(f"{self.base}/version").json()["version"]
        except Exception as exc:
            raise ConnectionError(f"no vLLM server answers at {self.base}/version ({type(exc).__name__}: {exc})") from None
        check_version(version)
        self.sampler = OpenAISampler(self.base, model, concurrency=concurrency, timeout_s=timeout_s, return_token_ids=True)
        self._pushed: Path | None = None
        self._pushes = 0

    def sample(self, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        return self.sampler.sample(prompts, n, params)

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Push ``(name, tensor)`` pairs (HF checkpoint names) to the server; every process must call it
        (a sharded model gathers its tensors inside the iteration)."""
        import torch
        from safetensors.torch import save_file

        if not self.is_writer:
            for _ in named_tensors:  # a sharded model gathers inside the iteration: take part, keep nothing
                pass
            self.barrier()
            return
        # clone: tied weights (embeddings = lm_head) must not share memory in a safetensors file
        tensors = {name: t.detach().to("cpu", getattr(torch, self.dtype)).contiguous().clone() for name, t in named_tensors}
        self._pushes += 1
        target = self.weights_dir / f"policy_{self._pushes:06d}"
        tmp = self.weights_dir / f".tmp_policy_{self._pushes:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        tmp.rename(target)
        self._post("/collective_rpc", {"method": "reload_weights",
                                       "kwargs": {"weights_path": str(target.resolve()), "is_checkpoint_format": True}})
        self._post("/reset_prefix_cache", None)
        if self._pushed is not None:
            shutil.rmtree(self._pushed, ignore_errors=True)
        self._pushed = target
        self.barrier()

    def _post(self, path: str, body: dict | None) -> None:
        resp = self._http.post(f"{self.base}{path}", json=body)
        if resp.status_code == 404:
            raise RuntimeError(
                f"{self.base}{path} does not exist: start the vLLM server with VLLM_SERVER_DEV_MODE=1 "
                f"(its weight-reload endpoints are development endpoints)"
            )
        if resp.status_code != 200:
            raise RuntimeError(f"{self.base}{path} failed (HTTP {resp.status_code}): {resp.text[:500]}")

    def close(self) -> None:
        self.sampler.close()
        self._http.close()
