"""The service's counters, gauges and latency histogram, written in Prometheus text format 0.0.4.

Small on purpose (no client library in the image): the service records what it judges and
``GET /metrics`` renders :meth:`ServiceMetrics.render`.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the per-program latency histogram's buckets."""


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if isinstance(x, float) and not x.is_integer() else str(int(x))


class ServiceMetrics:
    """Everything ``GET /metrics`` reports. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, float] = {}
        self._hist_counts = [0] * len(LATENCY_BUCKETS_S)
        self._hist_sum = 0.0
        self._hist_total = 0

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] += amount

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self._hist_sum += seconds
            self._hist_total += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self._hist_counts[i] += 1
                    break

    def counter_value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in _DESCRIPTIONS.items():
                if kind == "counter":
                    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                    series = self._counters.get(name) or {(): 0.0}
                    for key, value in sorted(series.items()):
                        lines.append(f"{name}{_labels(key)} {_number(value)}")
                elif kind == "gauge":
                    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                    lines.append(f"{name} {_number(self._gauges.get(name, 0.0))}")
                else:  # the latency histogram: cumulative buckets
                    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
                    running = 0
                    for bound, count in zip(LATENCY_BUCKETS_S, self._hist_counts):
                        running += count
                        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
                    lines.append(f'{name}_bucket{{le="+Inf"}} {self._hist_total}')
                    lines.append(f"{name}_sum {_number(self._hist_sum)}")
                    lines.append(f"{name}_count {self._hist_total}")
        return "\n".join(lines) + "\n"


# name -> (kind, help). Counters with no observations yet are shown at 0 so dashboards see them.
_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "sandbox_executions_total": ("counter", "Programs judged, by language."),
    "sandbox_runs_total": ("counter", "Programs judged, by overall verdict."),
    "sandbox_tests_total": ("counter", "Tests judged, by per-test verdict."),
    "sandbox_cache_hits_total": ("counter", "Programs answered from the engine's result cache."),
    "sandbox_http_requests_total": ("counter", "HTTP requests answered, by route and status code."),
    "sandbox_rejected_total": ("counter", "Requests refused with 504 because the service was full, by route."),
    "sandbox_queue_depth": ("gauge", "Programs admitted whose first test has not started yet."),
    "sandbox_running": ("gauge", "Programs being judged right now (a test of theirs started)."),
    "sandbox_workers": ("gauge", "Tests that may run at once (one per worker)."),
    "sandbox_testsets": ("gauge", "Test sets registered for the batch path."),
    "sandbox_engine_queue_depth": ("gauge", "Test jobs queued inside the engine for its workers."),
    "sandbox_engine_busy_workers": ("gauge", "Engine workers running a test right now."),
    "sandbox_run_latency_seconds": ("histogram", "Wall-clock seconds to judge one program (all its tests)."),
}
