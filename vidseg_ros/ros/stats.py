"""Sliding-window latency percentiles and rates for /diagnostics (no ROS imports: unit-testable)."""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class LatencyStats:
    """Per-stage latency samples over the last ``window`` frames; thread-safe."""

    def __init__(self, window: int = 300):
        self._samples: dict[str, deque] = {}
        self._window = window
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, deque(maxlen=self._window)).append(float(ms))

    def add_all(self, timings_ms: dict[str, float], prefix: str = '') -> None:
        for stage, ms in timings_ms.items():
            self.add(prefix + stage, ms)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {p50, p95, p99, max, n}} in milliseconds."""
        with self._lock:
            snap = {k: np.asarray(v) for k, v in self._samples.items() if v}
        return {k: {'p50': float(np.percentile(v, 50)), 'p95': float(np.percentile(v, 95)),
                    'p99': float(np.percentile(v, 99)), 'max': float(v.max()), 'n': int(v.size)}
                for k, v in snap.items()}


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0):
        self._times: deque = deque()
        self._window_s = window_s
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.total += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()

    def rate_hz(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], 1e-6)
            return (len(self._times) - 1) / span if span < self._window_s else len(self._times) / self._window_s
