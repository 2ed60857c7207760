"""Rollouts: sample programs with a model, judge them in the sandbox, score them.

Shared by PPO and DPO and by the held-out evaluation. Sampling goes through ``codealign.samplers``
(``hf`` on the live model; ``vllm`` with the policy's weights pushed into the engine each round),
judging through ``codealign.judge`` and a sandbox client, rewards through ``codealign.train.rewards``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sandbox.spec import RunResult

from codealign.judge import program_from_completion
from codealign.problems import Problem
from codealign.samplers.base import SamplingParams
from codealign.train.config import JudgeConfig, RewardConfig, SamplingConfig
from codealign.train.rewards import passed, reward_for


@dataclass
class Rollout:
    """One sampled completion of one problem, judged and scored."""

    problem_id: str
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    code: str | None
    result: RunResult | None  # None: no code, or the judge failed (see ``judged``)
    judged: bool  # False when judging failed or timed out: the sample trains nothing
    reward: float
    passed: bool


@dataclass
class Timings:
    """Seconds spent per phase (the benchmark reports their shares)."""

    gen_s: float = 0.0  # generating completions
    judge_s: float = 0.0  # extracting programs and judging them
    tokens: int = 0  # response tokens generated

    def add(self, other: "Timings") -> None:
        self.gen_s += other.gen_s
        self.judge_s += other.judge_s
        self.tokens += other.tokens


class PolicySampler:
    """Samples with a given model. ``hf``: a :class:`codealign.samplers.hf.HFSampler` on the live model
    object each call (a sharded model is gathered for the call). ``vllm``: one engine (colocated, or a
    server), whose weights :meth:`sync` replaces with the model's; call it whenever the sampling model
    changed (each step, and before each evaluation)."""

    def __init__(self, cfg: SamplingConfig, tokenizer, engine: Any = None):
        self.cfg, self.tokenizer, self.engine = cfg, tokenizer, engine
        if cfg.sampler == "vllm" and engine is None:
            raise ValueError("sampling.sampler = 'vllm' needs an engine (codealign.samplers.vllm.VLLMSampler)")

    def sync(self, model) -> None:
        """Push ``model``'s weights into the vLLM engine: whole tensors (gathered when sharded; every
        process must call this), HF names, LoRA merged, cast to the engine's dtype. No-op for ``hf``."""
        if self.engine is not None:
            import torch

            from codealign.train.sharding import iter_full_tensors

            dtype = getattr(torch, self.engine.dtype) if isinstance(getattr(self.engine, "dtype", None), str) else None
            with torch.no_grad():
                self.engine.load_weights(iter_full_tensors(model, dtype=dtype))

    def sample(self, model, prompts: Sequence[str], n: int, params: SamplingParams):
        if self.engine is not None:
            return self.engine.sample(prompts, n, params)
        from codealign.samplers.hf import HFSampler
        from codealign.train.sharding import gathered, unwrap

        model = unwrap(model)
        static = self.cfg.static_cache
        if static is None:
            static = next(model.parameters()).device.type == "cuda"
        with gathered(model):  # collective when sharded: every process samples, even with no prompts
            return HFSampler(model, self.tokenizer, batch_size=self.cfg.batch_size, static_cache=static).sample(prompts, n, params)


def build_engine(cfg: SamplingConfig, model_name: str, acc, seed: int):
    """The vLLM engine of ``sampling.vllm`` for this process (None for ``hf``). Not run here (no GPU)."""
    if cfg.sampler != "vllm":
        return None
    v = cfg.vllm
    if v.mode == "server":
        from codealign.samplers.vllm_server import VLLMServerSampler

        return VLLMServerSampler(v.server_url, v.server_model or model_name, v.weights_dir, dtype=v.dtype,
                                 is_writer=acc.is_main_process, barrier=acc.wait_for_everyone, timeout_s=v.timeout_s)
    from codealign.samplers.vllm import VLLMSampler

    tp_group = None
    if v.tensor_parallel_size > 1:  # processes [k*tp, (k+1)*tp) share engine k
        import torch.distributed as dist

        tp = v.tensor_parallel_size
        tp_group, _ = dist.new_subgroups_by_enumeration([list(range(i, i + tp)) for i in range(0, acc.num_processes, tp)])
    engine = VLLMSampler.colocated(
        model_name, rank=acc.process_index, local_rank=acc.local_process_index, world=acc.num_processes, seed=seed,
        tensor_parallel_size=v.tensor_parallel_size, gpu_memory_utilization=v.gpu_memory_utilization,
        max_model_len=v.max_model_len, dtype=v.dtype, sleep=v.sleep, tp_group=tp_group,
    )
    acc.wait_for_everyone()
    return engine


class Judge:
    """Judges (problem, program) pairs with one wall-clock limit per batch: whatever is not judged in
    ``timeout_s`` seconds, or whose judging failed, comes back ``None`` instead of stalling the loop.

    ``codealign.judge.judge_many`` already bounds its call; the trainer adds its own backstop (a
    worker thread it stops waiting for) so that even a client that ignores its timeout cannot hang a run.
    """

    def __init__(self, cfg: JudgeConfig, client=None, stop_on_first_failure: bool = True):
        from sandbox.client import make_client

        self.cfg = cfg
        self.client = client if client is not None else make_client(cfg.sandbox_urls, workers=cfg.workers, isolate=cfg.isolate)
        self.stop_on_first_failure = stop_on_first_failure  # all-or-nothing rewards need no later tests
        self.errors = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")

    def __call__(self, problems: Sequence[Problem], codes: Sequence[str | None]) -> list[RunResult | None]:
        from codealign.judge import judge_many

        results: list[RunResult | None] = [None] * len(codes)

        def keep(i: int, r: RunResult | None) -> None:
            results[i] = r

        future = self._pool.submit(
            judge_many,
            self.client,
            list(zip(problems, codes)),
            timeout_s=self.cfg.timeout_s,
            stop_on_first_failure=self.stop_on_first_failure,
            on_result=keep,
        )
        try:
            future.result(timeout=self.cfg.timeout_s + 5.0)
        except FutureTimeout:
            # the worker is abandoned; a fresh one serves the next batch
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")
        except Exception as exc:  # judge_many never raises by contract; stay safe if it does
            print(f"warning: judging {len(codes)} programs failed: {exc!r}")
        out = list(results)
        self.errors += sum(r is None for r in out)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def prompt_for(problem: Problem, tokenizer) -> str:
    from codealign.prompts import build_prompt

    return build_prompt(problem, tokenizer)


@dataclass
class Collector:
    """``collect(problems, model)``: n samples per problem -> extracted programs -> verdicts -> rewards."""

    sampler: PolicySampler
    tokenizer: Any
    judge: Callable[[Sequence[Problem], Sequence[str]], list[RunResult | None]]
    reward_cfg: RewardConfig
    params: SamplingParams
    n: int
    timings: Timings = field(default_factory=Timings)
    _prompt_cache: dict = field(default_factory=dict)

    def prompt(self, problem: Problem) -> tuple[str, list[int]]:
        if problem.id not in self._prompt_cache:
            text = prompt_for(problem, self.tokenizer)
            self._prompt_cache[problem.id] = (text, self.tokenizer(text).input_ids)
        return self._prompt_cache[problem.id]

    def __call__(self, problems: Sequence[Problem], model, n: int | None = None, params: SamplingParams | None = None) -> list[Rollout]:
        n = n or self.n
        params = params or self.params
        t0 = time.perf_counter()
        prompts = [self.prompt(p) for p in problems]
        samples = self.sampler.sample(model, [text for text, _ in prompts], n, params)
        t1 = time.perf_counter()
        flat = [(p, ids, c) for p, (_, ids), cs in zip(problems, prompts, samples) for c in cs]
        codes = [program_from_completion(p, c.text) for p, _, c in flat]
        to_judge = [i for i, code in enumerate(codes) if code is not None]
        results: list[RunResult | None] = [None] * len(flat)
        if to_judge:
            judged = self.judge([flat[i][0] for i in to_judge], [codes[i] for i in to_judge])
            for i, r in zip(to_judge, judged):
                results[i] = r
        t2 = time.perf_counter()
        rollouts = []
        for (problem, ids, completion), code, result in zip(flat, codes, results):
            response = completion.token_ids
            if response is None:
                response = self.tokenizer(completion.text, add_special_tokens=False).input_ids
            ok = code is None or result is not None
            rollouts.append(
                Rollout(
                    problem_id=problem.id,
                    prompt_ids=list(ids),
                    response_ids=list(response) or [self.tokenizer.eos_token_id],
                    text=completion.text,
                    code=code,
                    result=result,
                    judged=ok,
                    reward=reward_for(result, code is not None, self.reward_cfg) if ok else 0.0,
                    passed=passed(result),
                )
            )
        self.timings.add(Timings(t1 - t0, t2 - t1, sum(len(r.response_ids) for r in rollouts)))
        return rollouts
