"""``python -m sandbox serve --host H --port P [--workers N]``: run the HTTP service.

``codealign sandbox serve`` calls :func:`main` with the same arguments.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="The codealign sandbox service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Run the HTTP service (see docs/sandbox_service.md).")
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8080, help="Port (default 8080).")
    serve.add_argument("--workers", type=int, default=0, help="Tests judged at once; 0 = one per core (default).")
    serve.add_argument(
        "--max-queue", type=int, default=None,
        help="Programs that may wait beyond one per worker before 504 (default 64 per worker)."
    )
    serve.add_argument(
        "--queue-timeout", type=float, default=None,
        help="Seconds a single request waits for its first test to start before 504 (default: 10 for /v1/run; "
        "for /run_code compile_timeout + 8, as long as a SandboxFusion client such as verl still waits).",
    )
    serve.add_argument("--max-body-mb", type=int, default=256, help="Largest request body, MiB (default 256).")
    serve.add_argument(
        "--isolate", choices=["auto", "on", "off"], default="on",
        help="on (default; 'auto' is the same): refuse to start without full isolation. off: run programs "
        "without namespaces or uid drop (trusted code only), with a warning in the log, /healthz and every result.",
    )
    serve.add_argument(
        "--no-memory-cgroup", action="store_true",
        help="Run without a memory cgroup (the memory limit then holds per process only; /healthz and every result "
        "say so). By default the service refuses to start without one.",
    )
    serve.add_argument("--max-tests", type=int, default=10_000, help="Most tests per program (413 beyond; default 10000).")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] != "serve":
        print(f"error: unknown command {argv[0]!r}; the only command is 'serve' (python -m sandbox serve --help)",
              file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    from pydantic import ValidationError

    from sandbox.server import ServiceSettings, serve

    try:
        settings = ServiceSettings(
            workers=args.workers, max_queue=args.max_queue, queue_timeout_s=args.queue_timeout, isolate=args.isolate,
            max_body_bytes=args.max_body_mb << 20, memory_cgroup=not args.no_memory_cgroup, max_tests=args.max_tests,
        )
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    serve(args.host, args.port, settings, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
