"""``codealign eval``: sample (or read) programs, judge them in the sandbox, report pass@k.

Files in ``--out DIR``:

- ``results.jsonl``: one row per judged sample, appended as results arrive::

      {"problem_id": str, "sample_index": int, "code": str | null, "verdict": "AC"|"WA"|...,
       "passed": int, "total": int, "correct": bool, "public_ok": bool, "signature": str}

- ``samples.jsonl``: the completions, when this run sampled them (``--model``); rows as ``--samples``.
- ``summary.json``: ``{"pass_at_k": {"1": ...}, "n_problems", "n_samples", "n_at_k", "test_case_average",
  "strict_accuracy", "by_difficulty", "by_source", "verdicts", ...}`` (fractions in [0, 1]).
- ``pass_at_k.png``: pass@k (and n@k) against k.
- ``run.json``: the settings, so ``--resume`` can refuse to mix two different runs.

``--resume`` keeps every complete row of ``samples.jsonl`` and ``results.jsonl`` and only does what is
missing; identical programs of a problem are judged once (also across a resume).
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field


class EvalError(ValueError):
    """Bad input to an evaluation: reported as ``error: ...`` with exit code 2, nothing lost."""


class EvalConfig(BaseModel):
    """Settings of one evaluation. Defaults are the CLI's."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(default=Path("runs/eval"), description="Output folder.")
    dataset: str | None = Field(default=None, description="Hub name or local path; None = the embedded dataset.")
    split: str | None = None
    limit: int | None = Field(default=None, gt=0, description="Use only the first N problems of the dataset.")
    samples: Path | None = Field(default=None, description="Pre-generated samples JSONL; problems scored = those in it.")
    model: str | None = Field(default=None, description="Model to sample from (HF name/path, or the served name for openai).")
    sampler: Literal["hf", "vllm", "openai"] = "hf"
    n: int | None = Field(default=None, gt=0, description="Samples per problem (default: the largest k).")
    ks: list[int] | None = Field(
        default=None, description="k for pass@k and n@k; None = those of 1, 10, 100, 1000 that are <= n (n default 10 when sampling)."
    )
    submissions: int = Field(default=10, gt=0, description="n in AlphaCode's n@k.")
    max_new_tokens: int = Field(default=512, gt=0)
    temperature: float = Field(default=0.8, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int = 0
    prompt_style: Literal["auto", "completion", "chat"] = "auto"
    batch_size: int = Field(default=16, gt=0, description="hf: sequences per generate call.")
    device: str = Field(default="auto", description="hf: 'cpu', 'cuda' or 'auto'.")
    static_cache: bool = Field(default=False, description="hf on GPU: static KV cache + torch.compile.")
    api_base: str = Field(default="http://127.0.0.1:8000", description="openai: server URL.")
    api_key: str | None = None
    concurrency: int = Field(default=16, gt=0, description="openai: requests in flight.")
    sandbox_urls: list[str] = Field(default_factory=list, description="Sandbox services; empty = the in-process executor.")
    workers: int | None = Field(default=None, gt=0, description="In-process executor workers (None = one per core).")
    stop_on_first_failure: bool = Field(default=False, description="Faster judging; disables n@k and the test-case average.")
    judge_chunk: int = Field(default=2048, gt=0, description="Samples handed to the judge per batch (bounds memory; results are written as they arrive).")
    resume: bool = False
    progress: bool = True


# ------------------------------------------------------------------------------------------ I/O


def _read_complete_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file written by this module; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


class _RowWriter:
    """Thread-safe appender: each row is one ``write`` + flush, so a kill loses at most a torn line."""

    def __init__(self, path: Path):
        self._f = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, rows: list[dict]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        with self._lock:
            self._f.write(text)
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not enabled, transient=False,
    )


# ------------------------------------------------------------------------------------- sampling


def _make_sampler(cfg: EvalConfig):
    """(sampler, tokenizer or None) for ``cfg.model``."""
    if cfg.sampler == "openai":
        from codealign.samplers.openai import OpenAISampler

        return OpenAISampler(cfg.api_base, cfg.model, api_key=cfg.api_key, concurrency=cfg.concurrency), None
    from transformers import AutoTokenizer

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


def _sample(cfg: EvalConfig, problems: list, n: int, path: Path) -> dict[str, list[str]]:
    """Sample n completions per problem into ``path`` (resuming what it already holds)."""
    from codealign.prompts import build_prompt
    from codealign.samplers.base import SamplingParams

    have: dict[str, list[str]] = defaultdict(list)
    for row in _read_complete_rows(path):
        have[row["problem_id"]].append(row["completion"])
    # A problem's n rows are written in one go; anything else is a leftover of an older layout: redo it.
    done = {pid: c for pid, c in have.items() if len(c) == n}
    if len(done) != len(have):
        path.write_text("".join(json.dumps({"problem_id": p, "completion": c}) + "\n" for p, cs in done.items() for c in cs))
    todo = [(i, p) for i, p in enumerate(problems) if p.id not in done]
    if todo:
        sampler, tokenizer = _make_sampler(cfg)
        # Several problems per sampler call when n is small, so batches stay full (hf: batch_size
        # sequences; vllm/openai: ~256 sequences in flight).
        per_call = max(1, (cfg.batch_size if cfg.sampler == "hf" else 256) // n)
        writer = _RowWriter(path)
        try:
            with _progress(cfg.progress) as bar:
                task = bar.add_task("sampling", total=len(problems), completed=len(problems) - len(todo))
                for start in range(0, len(todo), per_call):
                    chunk = todo[start : start + per_call]
                    # The seed follows the first problem's position, so a resumed run that redoes the
                    # same chunks draws what an uninterrupted one would.
                    params = SamplingParams(
                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + chunk[0][0]
                    )
                    prompts = [build_prompt(p, tokenizer, cfg.prompt_style) for _, p in chunk]
                    try:
                        sampled = sampler.sample(prompts, n, params)
                    except (ConnectionError, RuntimeError) as e:  # server down or refusing; model errors
                        raise EvalError(
                            f"sampling failed ({type(e).__name__}: {e}); the {len(done)} problems sampled so far are "
                            f"kept in {path}, rerun with --resume to continue"
                        ) from e
                    for (_, p), completions in zip(chunk, sampled):
                        texts = [c.text for c in completions]
                        writer.write([{"problem_id": p.id, "completion": t} for t in texts])
                        done[p.id] = texts
                        bar.advance(task)
        finally:
            writer.close()
            sampler.close()
    return {p.id: done[p.id] for p in problems}


# -------------------------------------------------------------------------------------- judging


def _judge(cfg: EvalConfig, problems: dict, completions: dict[str, list[str]], path: Path) -> tuple[list[dict], int]:
    """Judge every sample not yet in ``path``; returns (all rows, samples whose judging failed)."""
    from sandbox.client import make_client

    from codealign.judge import judge_many, outcome, program_from_completion

    rows = [r for r in _read_complete_rows(path) if r["sample_index"] < len(completions.get(r["problem_id"], ()))]
    done = {(r["problem_id"], r["sample_index"]) for r in rows}
    known = {(r["problem_id"], r["code"]): r for r in rows}  # earlier verdicts, reused for duplicates
    pending: list[tuple[str, int, str | None]] = []
    reused: list[dict] = []
    for pid, texts in completions.items():
        for j, text in enumerate(texts):
            if (pid, j) in done:
                continue
            code = program_from_completion(problems[pid], text)
            if (pid, code) in known:
                reused.append({**known[(pid, code)], "sample_index": j})
            else:
                pending.append((pid, j, code))
    writer = _RowWriter(path)
    failed = 0
    try:
        writer.write(reused)
        rows += reused
        if pending:
            client = make_client(cfg.sandbox_urls or None, workers=cfg.workers)
            try:
                with _progress(cfg.progress) as bar:
                    total = sum(len(t) for t in completions.values())
                    task = bar.add_task("judging", total=total, completed=total - len(pending))
                    for start in range(0, len(pending), cfg.judge_chunk):
                        chunk = pending[start : start + cfg.judge_chunk]
                        new: list[dict | None] = [None] * len(chunk)

                        def on_result(i: int, result, chunk=chunk, new=new) -> None:
                            if result is None:
                                return
                            pid, j, code = chunk[i]
                            o = outcome(problems[pid], result)
                            row = {"problem_id": pid, "sample_index": j, "code": code, "verdict": o.verdict,
                                   "passed": o.passed, "total": o.total, "correct": o.correct,
                                   "public_ok": o.public_ok, "signature": o.signature}
                            new[i] = row
                            writer.write([row])
                            bar.advance(task)

                        judge_many(client, [(problems[pid], code) for pid, _, code in chunk],
                                   stop_on_first_failure=cfg.stop_on_first_failure, on_result=on_result)
                        failed += sum(r is None for r in new)
                        rows += [r for r in new if r is not None]
            finally:
                client.close()
    finally:
        writer.close()
    return rows, failed


# -------------------------------------------------------------------------------------- metrics


def summarize(problems: dict, rows: list[dict], ks: list[int], submissions: int, *, full_tests: bool = True) -> dict[str, Any]:
    """summary.json's content from the result rows (see the module docstring)."""
    from codealign.metrics import SampleOutcome, mean_pass_at_k, n_at_k, pass_at_k, strict_accuracy, test_case_average

    by_pid: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_pid[r["problem_id"]].append(r)
    counts = {pid: (len(rs), sum(r["correct"] for r in rs)) for pid, rs in by_pid.items()}
    summary: dict[str, Any] = {
        "pass_at_k": {str(k): v for k, v in mean_pass_at_k(counts.values(), ks).items()},
        "n_problems": len(by_pid),
        "n_samples": len(rows),
        "k": ks,
        "n_per_problem": {"min": min(n for n, _ in counts.values()), "max": max(n for n, _ in counts.values())},
        "strict_accuracy": strict_accuracy(counts.values()),
        "verdicts": dict(Counter(r["verdict"] for r in rows).most_common()),
        "no_program": sum(r["code"] is None for r in rows),
        "distinct_programs": len({(r["problem_id"], r["code"]) for r in rows}),
    }
    if full_tests:
        fractions = {pid: [r["passed"] / r["total"] if r["total"] else 0.0 for r in rs] for pid, rs in by_pid.items()}
        summary["test_case_average"] = test_case_average(fractions)
        outcomes = {
            pid: [SampleOutcome(r["sample_index"], r["public_ok"], r["signature"], r["correct"]) for r in rs]
            for pid, rs in by_pid.items()
        }
        summary["n_at_k"] = {
            f"{submissions}@{k}": sum(n_at_k(o, submissions, k) for o in outcomes.values()) / len(outcomes) for k in ks
        }
    for key, attr in (("by_difficulty", "difficulty"), ("by_source", "source")):
        groups: dict[str, list[str]] = defaultdict(list)
        for pid in by_pid:
            groups[getattr(problems[pid], attr) or "unknown"].append(pid)
        summary[key] = {
            g: {
                "n_problems": len(pids),
                "pass_at_k": {str(k): sum(pass_at_k(*counts[p], k) for p in pids) / len(pids) for k in ks},
            }
            for g, pids in sorted(groups.items())
        }
    return summary


def _plot(summary: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from codealign.metrics import mean_pass_at_k

    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        counts[r["problem_id"]][0] += 1
        counts[r["problem_id"]][1] += int(r["correct"])
    n_min = summary["n_per_problem"]["min"]
    grid = sorted({1, n_min, *[int(round(x)) for x in (1.5**i for i in range(60)) if x <= n_min]})
    curve = mean_pass_at_k([tuple(v) for v in counts.values()], grid)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, [curve[k] for k in grid], label="pass@k")
    ks = [int(k) for k in summary["pass_at_k"]]
    ax.scatter(ks, [summary["pass_at_k"][str(k)] for k in ks], zorder=3)
    if "n_at_k" in summary:
        pts = [(int(name.split("@")[1]), v) for name, v in summary["n_at_k"].items()]
        ax.plot([k for k, _ in pts], [v for _, v in pts], "s--", label=next(iter(summary["n_at_k"])).split("@")[0] + "@k")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("fraction of problems solved")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{summary['n_problems']} problems, {summary['n_samples']} samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"codealign eval: {summary['n_problems']} problems, {summary['n_samples']} samples")
    table.add_column("metric")
    table.add_column("all", justify="right")
    groups = summary["by_difficulty"]
    for g in groups:
        table.add_column(f"{g} ({groups[g]['n_problems']})", justify="right")
    for k, v in summary["pass_at_k"].items():
        table.add_row(f"pass@{k}", f"{100 * v:.2f}%", *[f"{100 * groups[g]['pass_at_k'][k]:.2f}%" for g in groups])
    for name, v in summary.get("n_at_k", {}).items():
        table.add_row(name, f"{100 * v:.2f}%", *[""] * len(groups))
    if "test_case_average" in summary:
        table.add_row("test-case average", f"{100 * summary['test_case_average']:.2f}%", *[""] * len(groups))
    table.add_row("strict accuracy", f"{100 * summary['strict_accuracy']:.2f}%", *[""] * len(groups))
    Console().print(table)
    Console().print("verdicts: " + ", ".join(f"{k} {v}" for k, v in summary["verdicts"].items()))


# ------------------------------------------------------------------------------------ the run


def _settings_key(cfg: EvalConfig) -> dict:
    keep = ("dataset", "split", "limit", "samples", "model", "sampler", "n", "max_new_tokens", "temperature", "top_p",
            "seed", "prompt_style", "stop_on_first_failure")
    return json.loads(cfg.model_dump_json(include=set(keep)))


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Sample or read, judge, score; writes the files in ``cfg.out`` and returns the summary."""
    from codealign.loaders import DatasetFormatError, load_problems
    from codealign.samplers.file import SamplesFileError, read_samples

    if (cfg.samples is None) == (cfg.model is None):
        raise EvalError("give either --samples FILE.jsonl (score existing samples) or --model M (sample first)")
    if cfg.ks is not None and (not cfg.ks or any(k < 1 for k in cfg.ks)):
        raise EvalError(f"--k needs positive integers, got {cfg.ks}")
    try:
        file_samples = read_samples(cfg.samples) if cfg.samples is not None else None
        problem_list = load_problems(cfg.dataset, cfg.split, limit=cfg.limit)
    except (SamplesFileError, DatasetFormatError) as e:
        raise EvalError(str(e)) from e
    problems = {p.id: p for p in problem_list}
    if file_samples is not None:
        unknown = [pid for pid in file_samples if pid not in problems]
        if unknown:
            raise EvalError(
                f"{len(unknown)} problem id(s) in {cfg.samples} are not in dataset {cfg.dataset or 'embedded'}"
                f"{' split ' + cfg.split if cfg.split else ''}: {', '.join(map(repr, unknown[:5]))}"
                f"{' ...' if len(unknown) > 5 else ''}"
            )
        ks = sorted(set(cfg.ks)) if cfg.ks else _default_ks(min(len(c) for c in file_samples.values()))
        short = {pid: len(c) for pid, c in file_samples.items() if len(c) < ks[-1]}
        if short:
            pid, n = min(short.items(), key=lambda kv: kv[1])
            raise EvalError(f"k={ks[-1]} > n: problem {pid!r} has only {n} samples in {cfg.samples} (pass@k needs k <= n)")
    else:
        n = cfg.n or (max(cfg.ks) if cfg.ks else 10)
        ks = sorted(set(cfg.ks)) if cfg.ks else _default_ks(n)
        if ks[-1] > n:
            raise EvalError(f"k={ks[-1]} > n={n}: pass@k needs at least k samples per problem (raise --n or lower --k)")

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    run_file, results_file = out / "run.json", out / "results.jsonl"
    settings = {**_settings_key(cfg), "n": None if file_samples is not None else n}  # the effective n
    if run_file.exists() or results_file.exists():
        if not cfg.resume:
            raise EvalError(f"{out} already holds an evaluation; pass --resume to continue it, or choose another --out")
        if run_file.exists() and json.loads(run_file.read_text()) != settings:
            raise EvalError(f"--resume: the settings differ from the run in {out} ({run_file}); use another --out")
    run_file.write_text(json.dumps(settings, indent=2) + "\n")

    if file_samples is not None:
        completions = file_samples
    else:
        completions = _sample(cfg, problem_list, n, out / "samples.jsonl")
    rows, failed = _judge(cfg, problems, completions, results_file)
    if failed:
        raise EvalError(f"{failed} sample(s) could not be judged (sandbox failure or timeout); rerun with --resume to retry them")
    rows.sort(key=lambda r: (r["problem_id"], r["sample_index"]))
    summary = summarize(problems, rows, ks, cfg.submissions, full_tests=not cfg.stop_on_first_failure)
    summary.update(dataset=cfg.dataset or "embedded", split=cfg.split, samples=str(cfg.samples) if cfg.samples else None, model=cfg.model)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(summary, rows, out / "pass_at_k.png")
    return summary


def _default_ks(n: int) -> list[int]:
    return [k for k in (1, 10, 100, 1000) if k <= n]


def _parse_ks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"--k takes comma-separated integers, e.g. 1,10,100 (got {text!r})") from e


def eval_command(
    samples: Path | None = typer.Option(None, "--samples", help="JSONL of {problem_id, completion} rows to score (instead of --model)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Hub name (deepmind/code_contests, codeparrot/apps, ...) or a local .jsonl/.parquet file or folder. Default: the embedded dataset."),
    split: str | None = typer.Option(None, "--split", help="Dataset split (Hub default: test; local: file name)."),
    k: str | None = typer.Option(None, "--k", help="Comma-separated k for pass@k and n@k, each <= n (default: those of 1,10,100,1000 that are <= n)."),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Output folder."),
    model: str | None = typer.Option(None, "--model", help="Sample from this model first (HF name/path; served name for openai)."),
    sampler: str = typer.Option("hf", "--sampler", help="hf | vllm | openai."),
    n: int | None = typer.Option(None, "--n", help="Samples per problem when sampling (default: the largest k, else 10)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in --out without redoing finished work."),
    sandbox_url: str | None = typer.Option(None, "--sandbox-url", help="Running sandbox service(s), comma-separated; default: in-process executor."),
    workers: int | None = typer.Option(None, "--workers", help="In-process sandbox workers (default: one per core)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N problems of the dataset."),
    submissions: int = typer.Option(10, "--submissions", help="n of AlphaCode's n@k."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    temperature: float = typer.Option(0.8, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    seed: int = typer.Option(0, "--seed"),
    prompt_style: str = typer.Option("auto", "--prompt-style", help="auto (chat template if the tokenizer has one) | completion | chat."),
    batch_size: int = typer.Option(16, "--batch-size", help="hf: sequences per generate call."),
    device: str = typer.Option("auto", "--device", help="hf: cpu | cuda | auto."),
    static_cache: bool = typer.Option(False, "--static-cache", help="hf on GPU: static KV cache + torch.compile."),
    api_base: str = typer.Option("http://127.0.0.1:8000", "--api-base", help="openai: server URL."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="openai: bearer token."),
    stop_on_first_failure: bool = typer.Option(False, "--stop-on-first-failure", help="Faster judging; no n@k or test-case average."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Sample programs (or read them) and report pass@k, n@k and APPS averages, judged in the sandbox."""
    from pydantic import ValidationError

    try:
        cfg = EvalConfig(
            out=out, dataset=dataset, split=split, limit=limit, samples=samples, model=model, sampler=sampler, n=n,
            ks=_parse_ks(k), submissions=submissions, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, seed=seed, prompt_style=prompt_style, batch_size=batch_size, device=device,
            static_cache=static_cache, api_base=api_base, api_key=api_key,
            sandbox_urls=[u.strip() for u in sandbox_url.split(",") if u.strip()] if sandbox_url else [],
            workers=workers, stop_on_first_failure=stop_on_first_failure, resume=resume, progress=not no_progress,
        )
        summary = run_eval(cfg)
    except ValidationError as e:
        first = e.errors()[0]
        typer.echo(f"error: invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}", err=True)
        raise typer.Exit(code=2) from None
    except EvalError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    _print_table(summary)
    typer.echo(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'pass_at_k.png'}")
