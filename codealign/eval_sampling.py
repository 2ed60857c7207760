"""Sampling for ``codealign eval``: n completions per problem into ``DIR/samples.jsonl``, resumable.

One file format, two paths:

- **local samplers** (``hf``, ``vllm``): problems in chunks, one sampler call each; a problem's n rows
  are written together once its call returns.
- **served** (``openai``): every missing sample of every problem goes into the sampler's bounded request
  pool at once. Each answered request is appended to ``DIR/requests.jsonl`` (``problem_id``, ``start``,
  ``completions``, ``finish_reasons``, ``usage``) as it arrives, and a problem's n rows go to
  ``samples.jsonl`` once all of them are in. A resumed run rebuilds unfinished problems from that log
  and requests only the sample indices still missing, however the server split its answers.

Also here: prompts that do not fit the model's context are counted apart and never sampled, and
generation is kept within the context (hf/vllm measure prompts with the model's tokenizer; so does the
openai path when ``--model`` is a local model folder, as with ``transformers serve``; otherwise a server
that refuses a prompt as too long says so with a 4xx); problems whose n samples all came back identical
at temperature > 0 are reported (a server ignoring ``temperature`` does that).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codealign.jsonl import RowWriter, read_complete_rows, write_rows

if TYPE_CHECKING:
    from codealign.evaluate import EvalConfig
    from codealign.problems import Problem


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def progress(enabled: bool, unit: str = "samples"):
    """A rich progress bar: done/total, elapsed, rate (``unit``/s) and ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} {unit}/s" if speed else f"- {unit}/s")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), Rate(),
        TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled, transient=False,
    )


@dataclass
class SamplingReport:
    """What sampling did, for ``summary.json``'s ``sampling``, ``too_long`` and ``identical_samples``."""

    sampler: str
    context: int | None = None  # the model's context (tokens), when known
    too_long: dict[str, str] = field(default_factory=dict)  # problem id -> why it was not sampled
    capped: int = 0  # problems whose max_new_tokens was cut to fit the context
    identical: list[str] = field(default_factory=list)  # problems whose n samples are all the same text
    sampled: int = 0  # samples produced by this invocation (a resume counts only its own)
    seconds: float = 0.0  # wall time of this invocation's sampling
    requests: int = 0  # openai: answered requests, all invocations (from requests.jsonl)
    retries: int = 0  # openai: retried requests, this invocation
    n_limit: int | None = None  # openai: the server's choices-per-request limit, once it showed one
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})

    def add_usage(self, usage: dict | None) -> None:
        self.requests += 1
        for key in self.usage:
            self.usage[key] += int((usage or {}).get(key) or 0)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sampler": self.sampler,
            "samples_this_run": self.sampled,
            "seconds_this_run": round(self.seconds, 3),
            "samples_per_s": round(self.sampled / self.seconds, 3) if self.seconds > 0 else None,
        }
        if self.sampler == "openai":
            out.update(requests=self.requests, retries_this_run=self.retries, server_n_limit=self.n_limit, usage=dict(self.usage))
        if self.capped:
            out["max_new_tokens_capped_problems"] = self.capped
        return out


def sample_problems(cfg: EvalConfig, problems: list[Problem], n: int, path: Path) -> tuple[dict[str, list[str]], SamplingReport]:
    """n completions per problem (those already in ``path`` are kept); problems too long are left out."""
    report = SamplingReport(sampler=cfg.sampler)
    if cfg.sampler == "openai":
        done = _sample_served(cfg, problems, n, path, report)
    else:
        done = _sample_local(cfg, problems, n, path, report)
    if report.sampled:
        rate = f"{report.sampled / report.seconds:.1f} samples/s" if report.seconds > 0 else ""
        extra = f", {report.requests} requests, {report.usage['completion_tokens']} completion tokens" if cfg.sampler == "openai" else ""
        print(f"sampled {report.sampled} samples in {report.seconds:.1f} s ({rate}{extra})", file=sys.stderr, flush=True)
    if report.too_long:
        where = f"the model's context ({report.context} tokens)" if report.context else "the server's context limit"
        warn(f"{len(report.too_long)} of {len(problems)} problems have prompts longer than {where}: counted apart, not sampled "
             f"(summary.json 'too_long')")
    if report.capped:
        warn(f"max_new_tokens was cut to fit the {report.context}-token context for {report.capped} problems")
    if n >= 2 and cfg.temperature > 0:
        report.identical = [p.id for p in problems if p.id in done and len(set(done[p.id])) == 1]
        if report.identical:
            warn(_identical_message(cfg.sampler, len(report.identical), len(done), n, cfg.temperature))
    return {p.id: done[p.id] for p in problems if p.id in done}, report


def _identical_message(sampler: str, count: int, of: int, n: int, temperature: float) -> str:
    head = f"{count} of {of} problems got {n} identical samples at temperature {temperature:g}, so their pass@k for k > 1 is pass@1"
    server = ("`transformers serve` samples only when the model's generation_config.json has \"do_sample\": true, and some "
              "servers decode greedily or fix a seed")
    if sampler == "openai" and count == of:  # a confident model repeats itself on some problems, a greedy server on all
        return f"{head}. All of them: the server most likely ignores temperature ({server}). See summary.json 'identical_samples'."
    cause = "the model puts (almost) all its probability on one completion for these"
    if sampler == "openai":
        cause += f"; if that is unexpected, check that the server samples ({server})"
    return f"{head}. Likely cause: {cause}. See summary.json 'identical_samples'."


def _complete_problems(path: Path, n: int) -> dict[str, list[str]]:
    """Problems with all n rows in ``path``; anything else (a torn problem, an older layout) is dropped from the file."""
    have: dict[str, list[str]] = defaultdict(list)
    for row in read_complete_rows(path):
        have[row["problem_id"]].append(row["completion"])
    done = {pid: c for pid, c in have.items() if len(c) == n}
    if len(done) != len(have):
        write_rows(path, [{"problem_id": p, "completion": c} for p, cs in done.items() for c in cs])
    return done


def _fit_context(report: SamplingReport, lengths: dict[str, int], max_new_tokens: int) -> dict[str, int]:
    """Problems whose prompt fills the context go to ``report.too_long``; the others' max_new_tokens, cut to fit."""
    context = report.context
    if not context:
        return {pid: max_new_tokens for pid in lengths}
    report.too_long.update({pid: f"{k} prompt tokens >= context {context}" for pid, k in lengths.items() if k >= context})
    fits = {pid: min(max_new_tokens, context - k) for pid, k in lengths.items() if k < context}
    report.capped += sum(m < max_new_tokens for m in fits.values())
    return fits


# ---------------------------------------------------------------------------------- local (hf, vllm)


def make_local_sampler(cfg: EvalConfig):
    """(sampler, tokenizer) for ``cfg.model`` with the hf or vllm backend."""
    from transformers import AutoTokenizer

    from codealign.evaluate import EvalError

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    except Exception as e:  # noqa: BLE001
        raise EvalError(f"cannot load a tokenizer for --model {cfg.model!r}: {type(e).__name__}: {e}") from e
    if cfg.sampler == "vllm":
        from codealign.samplers.vllm import VLLMSampler

        try:
            return VLLMSampler(cfg.model, seed=cfg.seed), tokenizer
        except ImportError as e:
            raise EvalError(str(e)) from e
    import torch
    from transformers import AutoModelForCausalLM

    from codealign.samplers.hf import HFSampler

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype).to(device)
    except Exception as e:  # noqa: BLE001
        raise EvalError(f"cannot load --model {cfg.model!r}: {type(e).__name__}: {e}") from e
    return HFSampler(model, tokenizer, batch_size=cfg.batch_size, static_cache=cfg.static_cache), tokenizer


def _sample_local(cfg: EvalConfig, problems: list[Problem], n: int, path: Path, report: SamplingReport) -> dict[str, list[str]]:
    from codealign.evaluate import EvalError
    from codealign.prompts import build_prompt
    from codealign.samplers.base import SamplingParams

    done = _complete_problems(path, n)
    todo = [(i, p) for i, p in enumerate(problems) if p.id not in done]
    if not todo:
        return done
    sampler, tokenizer = make_local_sampler(cfg)
    writer = RowWriter(path)
    try:
        try:
            prompts = {p.id: build_prompt(p, tokenizer, cfg.prompt_style) for _, p in todo}
        except ValueError as e:  # chat style without a chat template
            raise EvalError(str(e)) from e
        report.context = sampler.context_length()
        lengths = {pid: len(tokenizer(text).input_ids) for pid, text in prompts.items()} if report.context else {}
        room = _fit_context(report, lengths, cfg.max_new_tokens) if report.context else {}
        todo = [(i, p) for i, p in todo if p.id not in report.too_long]
        # Several problems per sampler call when n is small, so batches stay full (hf: batch_size
        # sequences; vllm: ~256 sequences in flight).
        per_call = max(1, (cfg.batch_size if cfg.sampler == "hf" else 256) // n)
        start_t = time.perf_counter()
        with progress(cfg.progress) as bar:
            task = bar.add_task("sampling", total=len(problems) * n, completed=len(done) * n)
            for start in range(0, len(todo), per_call):
                chunk = todo[start : start + per_call]
                # never past the context: what a model writes there is garbage (one call, one length)
                max_new = min([cfg.max_new_tokens, *(room[p.id] for _, p in chunk if p.id in room)])
                # The seed follows the first problem's position, so a resumed run that redoes the
                # same chunks draws what an uninterrupted one would.
                params = SamplingParams(max_new_tokens=max_new, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + chunk[0][0])
                try:
                    sampled = sampler.sample([prompts[p.id] for _, p in chunk], n, params)
                except (ConnectionError, RuntimeError) as e:
                    raise EvalError(f"sampling failed ({type(e).__name__}: {e}); the {len(done)} problems sampled so far are "
                                    f"kept in {path}, rerun with --resume to continue") from e
                for (_, p), completions in zip(chunk, sampled):
                    texts = [c.text for c in completions]
                    writer.write([{"problem_id": p.id, "completion": t} for t in texts])
                    done[p.id] = texts
                    report.sampled += n
                bar.advance(task, n * len(chunk))
        report.seconds = time.perf_counter() - start_t
    finally:
        writer.close()
        sampler.close()
    return done


# ------------------------------------------------------------------------------------ served (openai)


def _missing_runs(got: dict[int, str], n: int) -> list[tuple[int, int]]:
    """(start, count) of each run of consecutive sample indices in 0..n-1 not in ``got``."""
    runs: list[tuple[int, int]] = []
    for j in range(n):
        if j in got:
            continue
        if runs and runs[-1][0] + runs[-1][1] == j:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((j, 1))
    return runs


def _local_model_measure(model: str, chat: bool):
    """(context, prompt -> tokens) when ``model`` is a local model folder with a tokenizer, else (None, None)."""
    folder = Path(model)
    try:
        context = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None, None
    if not context:
        return None, None
    try:
        if chat:  # rendering the chat template takes transformers
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model)
            if not getattr(tokenizer, "chat_template", None):
                return None, None
            return int(context), lambda m: len(tokenizer(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)).input_ids)
        from tokenizers import Tokenizer  # the fast tokenizer's own file: no torch import for a served run

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return int(context), lambda text: len(tokenizer.encode(text).ids)
    except Exception:  # noqa: BLE001 - only a help: the server has the last word
        return None, None


def _sample_served(cfg: EvalConfig, problems: list[Problem], n: int, path: Path, report: SamplingReport) -> dict[str, list[str]]:
    from codealign.evaluate import EvalError
    from codealign.prompts import chat_messages, completion_prompt
    from codealign.samplers.base import SamplingParams
    from codealign.samplers.openai import OpenAISampler, Part

    log_path = path.with_name("requests.jsonl")
    done = _complete_problems(path, n)
    partial: dict[str, dict[int, str]] = defaultdict(dict)
    for row in read_complete_rows(log_path):
        report.add_usage(row.get("usage"))
        if row["problem_id"] not in done:
            for j, text in enumerate(row["completions"], start=row["start"]):
                if j < n:
                    partial[row["problem_id"]].setdefault(j, text)
    writer, log = RowWriter(path), RowWriter(log_path)

    def finish(pid: str) -> None:
        texts = [partial[pid][j] for j in range(n)]
        writer.write([{"problem_id": pid, "completion": t} for t in texts])
        done[pid] = texts
        del partial[pid]

    try:
        for pid in [pid for pid, got in partial.items() if len(got) == n]:  # logged, but killed before samples.jsonl
            finish(pid)
        parts = [Part(i, start, count) for i, p in enumerate(problems) if p.id not in done for start, count in _missing_runs(partial[p.id], n)]
        if not parts:
            return done
        chat = cfg.prompt_style == "chat"
        prompts = [chat_messages(p) if chat else completion_prompt(p) for p in problems]
        report.context, measure = _local_model_measure(cfg.model, chat)
        room: dict[str, int] = {}
        if measure is not None:
            todo = {part.prompt for part in parts}
            room = _fit_context(report, {problems[i].id: measure(prompts[i]) for i in todo}, cfg.max_new_tokens)
            parts = [part for part in parts if problems[part.prompt].id not in report.too_long]
        limits = [room.get(p.id, cfg.max_new_tokens) for p in problems]
        sampler = OpenAISampler(cfg.api_base, cfg.model, api_key=cfg.api_key, chat=chat, concurrency=cfg.concurrency,
                                max_n_per_request=cfg.max_n_per_request)
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        start_t = time.perf_counter()
        with progress(cfg.progress) as bar:
            task = bar.add_task("sampling", total=len(problems) * n, completed=len(problems) * n - sum(p.count for p in parts))

            def on_part(part: Part, completions: list, usage: dict) -> None:
                pid = problems[part.prompt].id
                log.write([{"problem_id": pid, "start": part.start, "completions": [c.text for c in completions],
                            "finish_reasons": [c.finish_reason for c in completions], "usage": usage}])
                report.add_usage(usage)
                for j, c in enumerate(completions, start=part.start):
                    partial[pid][j] = c.text
                report.sampled += len(completions)
                bar.advance(task, len(completions))
                if len(partial[pid]) == n:
                    finish(pid)

            def on_too_long(i: int, message: str) -> None:
                report.too_long[problems[i].id] = message
                bar.advance(task, n - len(partial.get(problems[i].id, {})))

            try:
                sampler.sample_parts(prompts, parts, params, on_part, on_too_long, max_new_tokens=limits)
            except (ConnectionError, RuntimeError) as e:
                raise EvalError(f"sampling failed ({type(e).__name__}: {e}); the samples received so far are kept in {path} "
                                f"and {log_path}, rerun with --resume to continue") from e
            finally:
                report.seconds = time.perf_counter() - start_t
                report.retries, report.n_limit = sampler.stats.retries, sampler.n_limit
                sampler.close()
    finally:
        writer.close()
        log.close()
    return done
