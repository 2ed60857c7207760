"""The ``codealign`` command line: ``train``, ``eval``, ``study`` and ``sandbox serve``.

Each command's options live next to the code that runs it; this module only assembles them.
Command modules import heavy libraries (torch, transformers) inside the command body, so
``codealign --help`` stays fast.
"""

from __future__ import annotations

import typer

from codealign.evaluate import eval_command
from codealign.study.command import study_command
from codealign.train.command import train_command

app = typer.Typer(
    name="codealign",
    help="Align code models with execution feedback: sandboxed judging, pass@k, PPO, GRPO/RLOO/REINFORCE++ and DPO, studies over seeds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="train")(train_command)
app.command(name="eval")(eval_command)
app.command(name="study")(study_command)

sandbox_app = typer.Typer(help="The sandbox execution service.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8080, help="Port to bind."),
    workers: int = typer.Option(0, help="Execution workers (0 = one per core)."),
) -> None:
    """Run the sandbox HTTP service (same as `python -m sandbox serve`)."""
    from sandbox.__main__ import main as sandbox_main

    raise typer.Exit(code=sandbox_main(["serve", "--host", host, "--port", str(port), "--workers", str(workers)]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
