"""``codealign study``: the command-line surface (the work is in config.py, runner.py, report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def study_command(
    config: Path = typer.Option(..., "--config", "-c", help="Study YAML: arms (train configs / overrides), seeds (see configs/study/)."),
    out: Path = typer.Option(..., "--out", help="Study directory: runs/<arm>/seed<S>/, table.md, table.json, curves.png."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated run seeds, e.g. 0,1,2 (default: the study file's)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Runs at a time (each gets cores/jobs torch threads)."),
    report_only: bool = typer.Option(False, "--report-only", help="Only rebuild the tables and plot from the runs on disk."),
) -> None:
    """Train every arm of a study over seeds and compare them: mean test pass@1 with 95% t-intervals.

    Run it again after an interruption: finished (arm, seed) runs are kept, interrupted ones resume
    from their last complete round. Example: codealign study --config configs/study/tiny.yaml --seeds 0,1,2 --out runs/study
    """
    from codealign.study.config import load_study, plan_lines, resolve
    from codealign.study.report import write_report
    from codealign.study.runner import StudyLock, plan_jobs, run_jobs
    from codealign.train.config import ConfigError

    try:
        study, root = load_study(config)
        seed_list = [int(s) for s in seeds.split(",") if s.strip()] if seeds else study.seeds
        arms = [a.name for a in study.arms]
        if report_only:
            table = write_report(out, arms, seed_list, study.description)
        else:
            configs = resolve(study, root, out, seed_list)
            with StudyLock(out):
                jobs_list = plan_jobs(configs, seed_list, arms)
                for line in plan_lines(study, configs, seed_list):
                    typer.echo(line)
                done = sum(j.action == "done" for j in jobs_list)
                typer.echo(f"{len(jobs_list)} runs ({len(arms)} arms x {len(seed_list)} seeds), {done} already done, {jobs} at a time")
                failed = run_jobs(jobs_list, out, jobs, say=typer.echo)
                table = write_report(out, arms, seed_list, study.description)
            if failed:
                typer.echo(f"error: {len(failed)} runs failed: " + ", ".join(f"{j.arm} seed {j.seed}" for j in failed), err=True)
                raise typer.Exit(code=1)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/table.md, {out}/table.json, {out}/curves.png ({sum(len(e['seeds']) for e in table['arms'].values())} complete runs)")
