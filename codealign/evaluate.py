"""``codealign eval``: sample (or read) programs, judge them, report pass@k."""

from __future__ import annotations

import typer


def eval_command() -> None:
    """Sample programs and report pass@k, judged in the sandbox."""
    typer.echo("error: `codealign eval` is not built yet", err=True)
    raise typer.Exit(code=1)
