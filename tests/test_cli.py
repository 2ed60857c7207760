"""The command-line surface: the entry points exist and list their subcommands."""

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_codealign_help_lists_subcommands():
    out = run("-m", "codealign", "--help")
    assert out.returncode == 0, out.stderr
    for sub in ("train", "eval", "sandbox"):
        assert sub in out.stdout


def test_sandbox_module_rejects_unknown_command():
    out = run("-m", "sandbox", "frobnicate")
    assert out.returncode != 0
    assert "unknown command" in out.stderr

