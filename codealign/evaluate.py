"""``codealign eval``: sample (or read) programs, judge them in the sandbox, report pass@k.

Files in ``--out DIR``:

- ``results.jsonl``: one row per judged sample, appended as results arrive::

      {"problem_id": str, "sample_index": int, "code": str | null, "verdict": "AC"|"WA"|...,
       "passed": int, "total": int, "correct": bool, "public_ok": bool, "signature": str}

- ``samples.jsonl``: the completions, when this run sampled them (``--model``); rows as ``--samples``.
- ``requests.jsonl``: ``--sampler openai`` only: one row per answered request (``problem_id``, ``start``,
  ``completions``, ``finish_reasons``, ``usage``), what a resume rebuilds unfinished problems from.
- ``summary.json``: ``{"pass_at_k": {"1": ...}, "n_problems", "n_samples", "n_at_k", "test_case_average",
  "strict_accuracy", "by_difficulty", "by_source", "verdicts", ..., "sampling", "too_long", "no_tests",
  "identical_samples"}`` (fractions in [0, 1]).
- ``pass_at_k.png``: pass@k (and n@k) against k.
- ``run.json``: the settings, with digests of the problems and of a ``--samples`` file, so ``--resume``
  refuses to mix two different runs; ``scoring`` (k, n@k's n) may change on a resume.

``--resume`` keeps every complete row of ``samples.jsonl`` and ``results.jsonl`` and only does what is
missing; identical programs of a problem are judged once (also across a resume); a result row whose
program is not what the sample now extracts to is judged again, never reused.
"""

from __future__ import annotations

import hashlib
import json
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
    prompt_style: Literal["auto", "completion", "chat"] = Field(
        default="auto", description="auto: chat template if the tokenizer has one (openai: completion); chat with openai: /v1/chat/completions."
    )
    batch_size: int = Field(default=16, gt=0, description="hf: sequences per generate call.")
    device: str = Field(default="auto", description="hf: 'cpu', 'cuda' or 'auto'.")
    static_cache: bool = Field(default=False, description="hf on GPU: static KV cache + torch.compile.")
    api_base: str = Field(default="http://127.0.0.1:8000", description="openai: server URL.")
    api_key: str | None = None
    concurrency: int = Field(default=16, gt=0, description="openai: requests in flight.")
    max_n_per_request: int = Field(
        default=64, gt=0, description="openai: samples asked per request at most; a server that returns fewer lowers it for the run."
    )
    sandbox_urls: list[str] = Field(default_factory=list, description="Sandbox services; empty = the in-process executor.")
    workers: int | None = Field(default=None, gt=0, description="In-process executor workers (None = one per core).")
    isolate: Literal["on", "off"] = Field(
        default="on", description="In-process executor: 'on' needs root; 'off' = rlimits only (trusted code), reported."
    )
    stop_on_first_failure: bool = Field(default=False, description="Faster judging; disables n@k and the test-case average.")
    judge_chunk: int = Field(default=2048, gt=0, description="Samples handed to the judge per batch (bounds memory; results are written as they arrive).")
    resume: bool = False
    progress: bool = True


# -------------------------------------------------------------------------------------- judging


def _judge(cfg: EvalConfig, problems: dict, completions: dict[str, list[str]], path: Path) -> tuple[list[dict], int]:
    """Judge every sample without a valid row in ``path``; returns (all rows, samples whose judging failed).

    A row is valid when its program is what the sample extracts to now: a row left by other samples
    (a changed samples file) is dropped and the sample judged again, never reused.
    """
    from sandbox.client import make_client

    from codealign.eval_sampling import progress, warn
    from codealign.jsonl import RowWriter, read_complete_rows, write_rows
    from codealign.judge import judge_many, outcome, program_from_completion

    codes = {pid: [program_from_completion(problems[pid], text) for text in texts] for pid, texts in completions.items()}
    stored = read_complete_rows(path)
    rows, seen = [], set()
    for r in stored:
        key = (r["problem_id"], r["sample_index"])
        program = codes.get(r["problem_id"], [])
        if key not in seen and r["sample_index"] < len(program) and program[r["sample_index"]] == r["code"]:
            rows.append(r)
            seen.add(key)
    stale = sum(r["problem_id"] in codes for r in stored) - len(rows)
    if stale:
        warn(f"{stale} rows of {path} do not match the samples now (changed or duplicated): judged again")
        write_rows(path, rows)
    known = {(r["problem_id"], r["code"]): r for r in rows}  # earlier verdicts, reused for duplicates
    pending: list[tuple[str, int, str | None]] = []
    reused: list[dict] = []
    for pid, programs in codes.items():
        for j, code in enumerate(programs):
            if (pid, j) in seen:
                continue
            if (pid, code) in known:
                reused.append({**known[(pid, code)], "sample_index": j})
            else:
                pending.append((pid, j, code))
    writer = RowWriter(path)
    failed = 0
    try:
        writer.write(reused)
        rows += reused
        if pending:
            client = make_client(cfg.sandbox_urls or None, workers=cfg.workers, isolate=cfg.isolate)
            try:
                with progress(cfg.progress) as bar:
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


# ------------------------------------------------------------------------------------ the run


def _settings_key(cfg: EvalConfig) -> dict:
    """The settings that decide the samples and verdicts (speed-only settings such as concurrency are not here)."""
    keep = ("dataset", "split", "limit", "samples", "model", "sampler", "n", "max_new_tokens", "temperature", "top_p",
            "seed", "prompt_style", "stop_on_first_failure")
    return json.loads(cfg.model_dump_json(include=set(keep)))


def _digest_problems(problems: list) -> str:
    """sha256 of everything about the problems that reaches a prompt or a verdict (statements, tests, limits, checkers)."""
    h = hashlib.sha256()
    for p in problems:
        h.update(hashlib.sha256(p.model_dump_json().encode()).digest())
    return h.hexdigest()


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_WHAT = {"samples_sha256": "the samples file's content", "problems_sha256": "the problems (dataset content)"}


def _check_resume(out: Path, run: dict, resume: bool) -> None:
    """Refuse to mix two runs in ``out``: every setting that decides samples or verdicts must match."""
    from codealign.eval_sampling import warn

    run_file, results_file = out / "run.json", out / "results.jsonl"
    if not (run_file.exists() or results_file.exists()):
        return
    if not resume:
        raise EvalError(f"{out} already holds an evaluation; pass --resume to continue it, or choose another --out")
    if not run_file.exists():
        raise EvalError(f"--resume: {out} has results but no run.json to check them against; use another --out")
    saved = json.loads(run_file.read_text())
    saved_scoring, scoring = saved.pop("scoring", None), run["scoring"]
    current = {k: v for k, v in run.items() if k != "scoring"}
    differ = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if differ:
        what = ", ".join(f"{_WHAT.get(k, k)}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        raise EvalError(f"--resume: the settings differ from the run in {out} ({what}); its samples and verdicts would be "
                        f"stale: use another --out (or delete {out})")
    if saved_scoring is not None and saved_scoring != scoring:
        warn(f"--resume with other scoring settings ({saved_scoring} -> {scoring}): the summary is recomputed from the verdicts in {out}")


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Sample or read, judge, score; writes the files in ``cfg.out`` and returns the summary."""
    from codealign.eval_report import plot, summarize
    from codealign.eval_sampling import sample_problems, warn
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
    dataset_name = f"dataset {cfg.dataset or 'embedded'}{' split ' + cfg.split if cfg.split else ''}"
    # A problem without tests would pass any program: left out of every figure, and said so.
    untested = [p.id for p in problem_list if not p.all_tests()]
    if untested:
        warn(f"{len(untested)} problems of {dataset_name} have no tests and are left out: {', '.join(map(repr, untested[:5]))}"
             f"{' ...' if len(untested) > 5 else ''} (summary.json 'no_tests')")
    scored = [p for p in problem_list if p.all_tests()]
    if file_samples is not None:
        unknown = [pid for pid in file_samples if pid not in problems]
        if unknown:
            raise EvalError(
                f"{len(unknown)} problem id(s) in {cfg.samples} are not in {dataset_name}: {', '.join(map(repr, unknown[:5]))}"
                f"{' ...' if len(unknown) > 5 else ''}"
            )
        file_samples = {pid: c for pid, c in file_samples.items() if pid not in set(untested)}
        if not file_samples:
            raise EvalError(f"no problem of {cfg.samples} has tests in {dataset_name}: nothing to score")
        ks = sorted(set(cfg.ks)) if cfg.ks else _default_ks(min(len(c) for c in file_samples.values()))
        short = {pid: len(c) for pid, c in file_samples.items() if len(c) < ks[-1]}
        if short:
            pid, n = min(short.items(), key=lambda kv: kv[1])
            raise EvalError(f"k={ks[-1]} > n: problem {pid!r} has only {n} samples in {cfg.samples} (pass@k needs k <= n)")
    else:
        if not scored:
            raise EvalError(f"no problem of {dataset_name} has tests: nothing to score")
        n = cfg.n or (max(cfg.ks) if cfg.ks else 10)
        ks = sorted(set(cfg.ks)) if cfg.ks else _default_ks(n)
        if ks[-1] > n:
            raise EvalError(f"k={ks[-1]} > n={n}: pass@k needs at least k samples per problem (raise --n or lower --k)")

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    run = {**_settings_key(cfg), "n": None if file_samples is not None else n, "problems_sha256": _digest_problems(problem_list)}
    if cfg.samples is not None:
        run["samples_sha256"] = _digest_file(cfg.samples)
    run["scoring"] = {"k": ks, "submissions": cfg.submissions}
    _check_resume(out, run, cfg.resume)
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")

    report = None
    if file_samples is not None:
        completions = file_samples
    else:
        completions, report = sample_problems(cfg, scored, n, out / "samples.jsonl")
        if not completions:
            raise EvalError(f"none of the {len(scored)} problems could be sampled ({len(report.too_long)} have prompts longer than "
                            "the model's context): nothing to score")
    rows, failed = _judge(cfg, problems, completions, out / "results.jsonl")
    if failed:
        raise EvalError(f"{failed} sample(s) could not be judged (sandbox failure or timeout); rerun with --resume to retry them")
    rows.sort(key=lambda r: (r["problem_id"], r["sample_index"]))
    summary = summarize(problems, rows, ks, cfg.submissions, full_tests=not cfg.stop_on_first_failure)
    summary.update(dataset=cfg.dataset or "embedded", split=cfg.split, samples=str(cfg.samples) if cfg.samples else None, model=cfg.model)
    summary["no_tests"] = {"n_problems": len(untested), "ids": untested[:100]}
    if report is not None:
        summary["sampling"] = report.to_json()
        summary["too_long"] = {"n_problems": len(report.too_long), "context": report.context,
                               "ids": list(report.too_long)[:100], "why": dict(list(report.too_long.items())[:5])}
        summary["identical_samples"] = {"n_problems": len(report.identical), "of": len(completions), "n": n,
                                        "temperature": cfg.temperature, "ids": report.identical[:100]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, rows, out / "pass_at_k.png")
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
    dataset: str | None = typer.Option(None, "--dataset", help="Hub name (deepmind/code_contests, codeparrot/apps, ...), a local .jsonl/.parquet file or folder, or 'synthetic[:SEED]' (the task family codealign train learns on). Default: the embedded dataset."),
    split: str | None = typer.Option(None, "--split", help="Dataset split (Hub and synthetic default: test, the held-out split; local: file name)."),
    k: str | None = typer.Option(None, "--k", help="Comma-separated k for pass@k and n@k, each <= n (default: those of 1,10,100,1000 that are <= n)."),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Output folder."),
    model: str | None = typer.Option(None, "--model", help="Sample from this model first (HF name/path; served name for openai)."),
    sampler: str = typer.Option("hf", "--sampler", help="hf | vllm | openai."),
    n: int | None = typer.Option(None, "--n", help="Samples per problem when sampling (default: the largest k, else 10)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in --out without redoing finished work."),
    sandbox_url: str | None = typer.Option(None, "--sandbox-url", help="Running sandbox service(s), comma-separated; default: in-process executor."),
    workers: int | None = typer.Option(None, "--workers", help="In-process sandbox workers (default: one per core)."),
    sandbox_isolate: str = typer.Option("on", "--sandbox-isolate", help="In-process sandbox: on (needs root) | off (rlimits only, trusted code)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N problems of the dataset."),
    submissions: int = typer.Option(10, "--submissions", help="n of AlphaCode's n@k."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    temperature: float = typer.Option(0.8, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    seed: int = typer.Option(0, "--seed"),
    prompt_style: str = typer.Option("auto", "--prompt-style", help="auto (chat template if the tokenizer has one; openai: completion) | completion | chat (openai: /v1/chat/completions)."),
    batch_size: int = typer.Option(16, "--batch-size", help="hf: sequences per generate call."),
    device: str = typer.Option("auto", "--device", help="hf: cpu | cuda | auto."),
    static_cache: bool = typer.Option(False, "--static-cache", help="hf on GPU: static KV cache + torch.compile."),
    api_base: str = typer.Option("http://127.0.0.1:8000", "--api-base", help="openai: server URL."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="openai: bearer token."),
    concurrency: int = typer.Option(16, "--concurrency", help="openai: requests in flight."),
    max_n_per_request: int = typer.Option(64, "--max-n-per-request", help="openai: samples per request at most (a server that returns fewer lowers it for the run)."),
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
            static_cache=static_cache, api_base=api_base, api_key=api_key, concurrency=concurrency, max_n_per_request=max_n_per_request,
            sandbox_urls=[u.strip() for u in sandbox_url.split(",") if u.strip()] if sandbox_url else [],
            workers=workers, isolate=sandbox_isolate, stop_on_first_failure=stop_on_first_failure, resume=resume,
            progress=not no_progress,
        )
        summary = run_eval(cfg)
    except ValidationError as e:
        first = e.errors()[0]
        typer.echo(f"error: invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}", err=True)
        raise typer.Exit(code=2) from None
    except EvalError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    from codealign.eval_report import print_report

    print_report(summary)
    typer.echo(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'pass_at_k.png'}")
