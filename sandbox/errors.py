"""Exceptions the engine raises for requests it cannot judge.

The HTTP service maps ``BadRequest`` (and its subclass ``LanguageUnavailable``) to a 4xx answer;
``SandboxFailure`` means the engine itself broke (a 5xx), never the program under test.
"""


class SandboxError(Exception):
    """Base class of every error the sandbox raises on purpose."""


class BadRequest(SandboxError, ValueError):
    """The request cannot be judged as given (unknown checker, fn_name with C++, bad test input...)."""


class LanguageUnavailable(BadRequest):
    """The language is unknown, or its toolchain (g++, javac/java) is not installed on this host."""


class SandboxFailure(SandboxError, RuntimeError):
    """The engine failed (a worker died twice on one test, the executor was closed...)."""
