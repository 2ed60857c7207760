"""Exceptions the engine raises for requests it cannot judge.

The HTTP service maps ``BadRequest`` (and its subclasses ``LanguageUnavailable``, ``RequestTooLarge``)
to a 4xx answer, ``QueueTimeout`` to 504; ``SandboxFailure`` means the engine itself broke (a 5xx),
never the program under test.
"""


class SandboxError(Exception):
    """Base class of every error the sandbox raises on purpose."""


class BadRequest(SandboxError, ValueError):
    """The request cannot be judged as given (unknown checker, fn_name with C++, bad test input...)."""


class RequestTooLarge(BadRequest):
    """More tests (or test bytes) in one request than the engine judges per request (HTTP 413)."""


class LanguageUnavailable(BadRequest):
    """The language is unknown, or its toolchain (g++, javac/java) is not installed on this host."""


class SandboxFailure(SandboxError, RuntimeError):
    """The engine failed (a worker broke twice on one test, the workers cannot start, the executor
    was closed...). Never caused by a program under test."""


class QueueTimeout(SandboxError, TimeoutError):
    """No test of the request started within the caller's ``start_timeout_s`` (HTTP 504): nothing ran."""
