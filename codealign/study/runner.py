"""Run every (arm, seed) of a study as its own ``codealign train`` process, ``jobs`` at a time.

Each run lives in ``DIR/runs/<arm>/seed<S>/`` (a normal training output directory, with its output in
``train.log``) and is started from ``DIR/configs/<arm>/seed<S>.yaml``, its resolved config. Running the
study again after a kill continues where it stopped, per (arm, seed): a finished run is kept as it
is, an interrupted one continues with ``codealign train --resume`` (from its last complete round, with
its saved config), one never started starts. A run whose saved config differs from the study's is an
error (the study file changed), except a larger ``rounds``, which extends the run.

The processes die with the study (``PR_SET_PDEATHSIG``), so a killed study leaves no training behind
that a resumed one would race with; a lock file keeps two studies out of one directory.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from codealign.study.config import config_yaml, run_dir
from codealign.train.config import ConfigError, TrainConfig


@dataclass
class Job:
    arm: str
    seed: int
    cfg: TrainConfig
    action: str  # "start", "resume", "extend" or "done"


def run_state(cfg: TrainConfig) -> str:
    """What running this (arm, seed) takes now: "done", "resume", "extend" (a finished run asked for
    more rounds) or "start". ConfigError when the directory holds a run of another config."""
    out = Path(cfg.out)
    saved_file = out / "config.json"
    if not saved_file.exists():
        return "start"
    saved = TrainConfig.model_validate(json.loads(saved_file.read_text()))
    if saved.model_dump(exclude={"out", "rounds"}) != cfg.model_dump(exclude={"out", "rounds"}) or saved.rounds > cfg.rounds:
        raise ConfigError(f"{out} holds a run of another config than the study's (did the study file change?); "
                          f"remove it or study into another --out")
    if finished_rounds(out) == cfg.rounds and (out / "policy" / "config.json").exists():
        return "done"
    return "extend" if saved.rounds < cfg.rounds else "resume"


def finished_rounds(out: Path) -> int | None:
    """The last round with a row in ``metrics.jsonl`` (None when none)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return None
    rounds = [json.loads(line).get("round") for line in path.read_text().splitlines() if line.strip()]
    rounds = [r for r in rounds if r is not None]
    return max(rounds) if rounds else None


def command(job: Job, configs_dir: Path) -> list[str]:
    base = [sys.executable, "-m", "codealign", "train", "--out", job.cfg.out]
    if job.action == "start":
        path = configs_dir / job.arm / f"seed{job.seed}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_yaml(job.cfg))
        return base + ["--config", str(path)]
    extra = ["--rounds", str(job.cfg.rounds)] if job.action == "extend" else []
    return base + ["--resume", *extra]  # the run's saved config (item 5 of issue #11)


def _die_with_parent() -> None:  # in the child, before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: a killed study may leave its runs going
        pass


def run_jobs(jobs: list[Job], out: Path, n_parallel: int, say: Callable[[str], None] = print) -> list[Job]:
    """Run the jobs that are not done, ``n_parallel`` at a time; returns the ones that failed."""
    todo = [j for j in jobs if j.action != "done"]
    threads = max(1, (os.cpu_count() or 1) // max(n_parallel, 1))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running: list[tuple[Job, subprocess.Popen, float]] = []
    failed: list[Job] = []
    while todo or running:
        while todo and len(running) < n_parallel:
            job = todo.pop(0)
            Path(job.cfg.out).mkdir(parents=True, exist_ok=True)
            log = open(Path(job.cfg.out) / "train.log", "ab")
            proc = subprocess.Popen(command(job, out / "configs"), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent)
            log.close()
            running.append((job, proc, time.perf_counter()))
            say(f"[{job.arm} seed {job.seed}] {job.action} ({threads} threads)")
        time.sleep(0.5)
        for item in list(running):
            job, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode == 0:
                say(f"[{job.arm} seed {job.seed}] done in {time.perf_counter() - t0:.0f} s")
            else:
                failed.append(job)
                say(f"[{job.arm} seed {job.seed}] FAILED (exit {proc.returncode}); see {job.cfg.out}/train.log")
    return failed


class StudyLock:
    """An exclusive lock on ``DIR/.lock`` for the study's lifetime (released by the OS if it dies)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.f = open(out / ".lock", "w")

    def __enter__(self) -> "StudyLock":
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another study is running in {self.f.name.rsplit('/', 1)[0]}") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def plan_jobs(configs: dict[tuple[str, int], TrainConfig], seeds: list[int], arms: list[str]) -> list[Job]:
    """Jobs seed by seed (every arm of seed 0 first), so an interrupted study has paired results early."""
    return [Job(a, s, configs[a, s], run_state(configs[a, s])) for s in seeds for a in arms]


__all__ = ["Job", "StudyLock", "plan_jobs", "run_jobs", "run_state", "run_dir"]
