"""``codealign train``."""

from __future__ import annotations

import typer


def train_command() -> None:
    """Train a policy with execution rewards (PPO or DPO) in rounds."""
    typer.echo("error: `codealign train` is not built yet", err=True)
    raise typer.Exit(code=1)
