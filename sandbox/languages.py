"""Languages: availability, compilation and how a compiled program is started.

Python is compiled to a code object in the service process (a syntax error is a CE at once, and no
worker ever parses the source twice); workers receive it marshalled and run it in a forked zygote.
C++ and Java are compiled *inside the sandbox* (a compiler reading ``#include "/etc/shadow"`` or
``/dev/random`` is hostile input too), once per distinct program: the product lands in a
content-addressed binary cache shared by all workers (read-only inside the sandbox at /sbx/bin).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import re
import shutil
import subprocess
import threading
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

from sandbox import jvm_archive
from sandbox.errors import LanguageUnavailable

LANGUAGES = ("python", "cpp", "java")
CPP_FLAGS = ("-std=c++17", "-O2", "-pipe")
# How every test's JVM runs: one core's worth of GC and JIT threads, C1 only (most tests are short).
JVM_FLAGS = ("-Xss64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:ActiveProcessorCount=1", "-Xshare:auto")
# What a JVM start costs less with (docs/sandbox_engine.md, "Java start"); used only where this JVM accepts
# all of them (jvm_start_flags). ArchiveRelocationMode=0 maps the JDK's class-data archive where it was
# dumped instead of at a random address: relocating its pointers was 12% of a trivial program's CPU. That
# gives up ASLR of that region, which guards a JVM against memory-corruption exploits; a program here
# already runs native code at will (Unsafe, exec of a file it writes), so the sandbox never relied on it.
# No hsperfdata file (a mmap'd file in the test's /tmp per start). The JVM's own warnings (unified logging
# writes them to stdout by default: "[warning][os,thread] Failed to start thread ...") go to stderr:
# stdout is the program's answer.
JVM_START_FLAGS = ("-XX:-UsePerfData", "-XX:+UnlockDiagnosticVMOptions", "-XX:ArchiveRelocationMode=0",
                   "-Xlog:disable", "-Xlog:all=warning:stderr")
COMPILE_MEMORY_MB = 2048  # a compile's process tree (memory cgroup) and, for g++/cc1plus, each process (RLIMIT_AS)


class CompileError(Exception):
    """The program does not compile (the message is the compiler's diagnostics)."""


@lru_cache(maxsize=None)
def _tool(name: str) -> str | None:
    path = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
    return os.path.realpath(path) if path else None


@lru_cache(maxsize=None)
def _version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout[:200]
    except (OSError, subprocess.SubprocessError):
        return ""


def availability() -> dict[str, str | None]:
    """Language -> None if usable here, else the reason it is not."""
    return {
        "python": None,
        "cpp": None if _tool("g++") else "g++ not found",
        "java": None if _tool("javac") and _tool("java") else "no JDK (javac/java) found",
    }


def require(language: str) -> None:
    if language not in LANGUAGES:
        raise LanguageUnavailable(f"unknown language {language!r}; supported: {', '.join(LANGUAGES)}")
    reason = availability()[language]
    if reason:
        raise LanguageUnavailable(f"language {language!r} is unavailable on this sandbox host: {reason}")


def extra_readonly_paths() -> list[str]:
    """Toolchain directories outside /usr that must be visible inside the sandbox root."""
    out = []
    for t in ("java", "javac", "g++"):
        p = _tool(t)
        if p and not p.startswith("/usr/"):
            out.append(os.path.dirname(os.path.dirname(p)))  # .../jdk/bin/java -> .../jdk
    return sorted(set(out))


@dataclass
class Program:
    """A compiled program, ready to run a test: either a code object id or an argv."""

    language: str
    mode: str  # "python" (code object run in the zygote) or "exec"
    code_id: str = ""
    code_blob: bytes = b""
    argv: list[str] = field(default_factory=list)
    address_space: bool = True  # False: RLIMIT_AS unusable (the JVM reserves far more than it uses)
    extra_nproc: int = 0
    needs_proc: bool = False  # mount a /proc of the program's own PID namespace (the JVM needs one)
    compile_output: str = ""  # compiler warnings, reported in RunResult.compile_output
    bin_key: str = ""  # compiled programs: the entry in the binary cache


_compile_lock = threading.Lock()  # warnings.catch_warnings swaps process-global state


def python_program(code: str) -> Program:
    try:
        # Warnings (e.g. SyntaxWarning) go to compile_output, never to the service's stderr.
        with _compile_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = compile(code, "main.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes in the source
        raise CompileError(f"{type(e).__name__}: {e}") from None
    except (RecursionError, MemoryError) as e:
        raise CompileError(f"program too deeply nested to compile: {type(e).__name__}") from None
    blob = marshal.dumps(obj)
    notes = "".join(f"main.py:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)
    return Program("python", "python", code_id=hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest(),
                   code_blob=blob, compile_output=notes)


def build_key(language: str, code: str) -> str:
    """Content address of a compiled program (source, flags and compiler version)."""
    tool = _tool("g++" if language == "cpp" else "javac") or ""
    h = hashlib.sha256()
    for part in (language, " ".join(CPP_FLAGS), _version(tool), code):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return f"{language}-{h.hexdigest()[:40]}"


_JAVA_PUBLIC = re.compile(r"\bpublic\s+(?:(?:final|abstract|static)\s+)*class\s+([A-Za-z_$][\w$]*)")
_JAVA_CLASS = re.compile(r"\bclass\s+([A-Za-z_$][\w$]*)")


def java_main_class(code: str) -> str:
    m = _JAVA_PUBLIC.search(code)
    if m:
        return m.group(1)
    pos = code.find("static void main")
    names = [(mm.start(), mm.group(1)) for mm in _JAVA_CLASS.finditer(code) if pos < 0 or mm.start() < pos]
    return names[-1][1] if names else "Main"


def compile_job(language: str, code: str, key: str) -> tuple[dict, list[bytes]]:
    """The sandbox job that compiles ``code`` and collects its product into the cache as ``key``."""
    if language == "cpp":
        argv = [_tool("g++"), *CPP_FLAGS, "-o", "main", "main.cpp"]
        files, collect = {"main.cpp": 0}, {"path": "main", "dest": key}
        env: dict[str, str] = {}
    else:
        cls = java_main_class(code)
        argv = [_tool("javac"), "-J-Xmx768m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1",
                "-J-XX:ActiveProcessorCount=1", "-encoding", "UTF-8", "-d", ".", f"{cls}.java"]
        files, collect = {f"{cls}.java": 0}, {"path": ".", "dest": key}  # the classes land beside it
        env = {}
    # g++ and its cc1plus get RLIMIT_AS too (a compile fed `#include "/dev/zero"` stops there even where
    # no memory cgroup exists); the JVM reserves far more address space than it uses, so javac has its
    # -Xmx and the cgroup.
    header = {"op": "run", "mode": "exec", "argv": argv, "proc": language == "java", "files": files, "collect": collect, "env": env,
              "cpu_s": 60, "wall_s": 120.0, "as_mb": COMPILE_MEMORY_MB if language == "cpp" else None,
              "cgroup_mb": COMPILE_MEMORY_MB, "stack_mb": None, "nproc": 256, "fsize_mb": 256,
              "nofile": 512, "stdout_cap": 1 << 20, "stderr_cap": 1 << 20}
    return header, [code.encode("utf-8", "surrogatepass")]


@lru_cache(maxsize=None)
def jvm_start_flags() -> tuple[str, ...]:
    """JVM_START_FLAGS if this host's JVM starts with them, else none: a JVM that does not know one of
    them (another version) would refuse to start, and every Java test would be a runtime error."""
    java = _tool("java")
    if not java:
        return ()
    try:
        ok = subprocess.run([java, *JVM_FLAGS, *JVM_START_FLAGS, "-version"], capture_output=True,
                            timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return JVM_START_FLAGS if ok else ()


def java_archive(bin_cache: str | None, wait: bool = False) -> str | None:
    """The file name, in ``bin_cache``, of the class-data archive Java tests map (sandbox/jvm_archive.py);
    None while it is being built (``wait``: build it now) or where it cannot be. ``bin_cache`` None:
    build it into this host's store only (the Docker image does so at build time)."""
    java, javac = _tool("java"), _tool("javac")
    if not java or not javac:
        return None
    return jvm_archive.ensure(bin_cache, java, javac, JVM_FLAGS + jvm_start_flags(), wait=wait)


def compiled_program(language: str, code: str, key: str, memory_limit_mb: int, bin_cache: str | None = None) -> Program:
    """How a test of the compiled program ``key`` starts; Java maps the shared class-data archive of
    ``bin_cache`` once it is there."""
    if language == "cpp":
        return Program("cpp", "exec", argv=["{bin}/" + key], bin_key=key)
    cls = java_main_class(code)
    java = _tool("java")
    archive = java_archive(bin_cache) if bin_cache else None
    shared = [f"-XX:SharedArchiveFile={{bin}}/{archive}"] if archive else []
    argv = [java, f"-Xmx{memory_limit_mb}m", *JVM_FLAGS, *jvm_start_flags(), *shared, "-cp", "{bin}/" + key, cls]
    return Program("java", "exec", argv=argv, address_space=False, extra_nproc=192,
                   needs_proc=True, bin_key=key)
