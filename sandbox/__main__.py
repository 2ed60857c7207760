"""``python -m sandbox serve --host H --port P [--workers N]``."""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m sandbox serve [--host H] [--port P] [--workers N]")
        return 0 if argv else 2
    if argv[0] != "serve":
        print(f"error: unknown command {argv[0]!r}; the only command is 'serve'", file=sys.stderr)
        return 2
    print("error: the sandbox service is not built yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
