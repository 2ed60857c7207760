"""``codealign train``: the command-line surface of the trainer (options only; the work is in rounds.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file overriding the defaults (see configs/)."),
    algo: Optional[str] = typer.Option(None, "--algo", help="ppo, dpo (DPO-Iter: --set dpo.iterative=true, the default), or a critic-free estimator with PPO's loss: grpo, drgrpo, rloo, reinforce++."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds after round 0 (the starting policy's evaluation)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (metrics.jsonl, checkpoints, curves.png)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last complete round, with its saved config (flags given change it)."
    ),
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", help="Override any config field, e.g. --set ppo.beta=0.05 --set sampling.n_per_prompt=16 (repeatable)."
    ),
    sandbox_url: Optional[str] = typer.Option(
        None, "--sandbox-url", help="Judge on running sandbox services (comma-separated URLs) instead of in-process."
    ),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config as YAML and exit."),
) -> None:
    """Train a policy with execution rewards (PPO, GRPO, Dr.GRPO, RLOO, REINFORCE++ or DPO) in rounds, evaluating test and validation pass@k each round.

    With no arguments: the offline `tiny` model on the embedded generated task set, on CPU, in a few
    minutes. GPU presets: --config configs/qwen2.5-coder-1.5b-ppo.yaml (see docs/train.md).
    """
    from codealign.train.config import ConfigError, build_config, resume_config

    sets = list(overrides or [])
    if sandbox_url:
        sets.append(f"judge.sandbox_urls=[{','.join(u.strip() for u in sandbox_url.split(',') if u.strip())}]")
    explicit = {"algo": algo, "rounds": rounds, "out": str(out) if out is not None else None}
    try:
        cfg = build_config(config, sets, **explicit)
        if resume:  # the saved config, changed only by what was given explicitly
            cfg, changes = resume_config(cfg.out, config, sets, algo=algo, rounds=rounds)
            typer.echo(f"resume: the config saved in {cfg.out}/config.json" + (
                ", changed by flags: " + "; ".join(changes) if changes else ", unchanged"))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if show_config:
        import yaml

        typer.echo(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        return
    from codealign.train.rounds import train

    try:
        last = train(cfg, resume=resume)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"done: {cfg.out}/metrics.jsonl (last round {last.get('round')}: test pass@1 {last.get('eval_pass@1', float('nan')):.3f})")
