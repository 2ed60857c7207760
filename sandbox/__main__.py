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
    serve.add_argument("--workers", type=int, default=0, help="Programs judged at once; 0 = one per core (default).")
    serve.add_argument(
        "--max-queue", type=int, default=None, help="Programs that may wait for a worker before 504 (default 64 per worker)."
    )
    serve.add_argument(
        "--queue-timeout", type=float, default=10.0, help="Seconds a single request waits for a worker before 504 (default 10)."
    )
    serve.add_argument("--max-body-mb", type=int, default=256, help="Largest request body, MiB (default 256).")
    serve.add_argument(
        "--isolate", choices=["auto", "on", "off"], default="auto",
        help="on: refuse to start without full isolation; auto (default): fall back to rlimits with a warning.",
    )
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
            max_body_bytes=args.max_body_mb << 20,
        )
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    serve(args.host, args.port, settings, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
