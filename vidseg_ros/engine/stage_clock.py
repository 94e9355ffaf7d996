"""Per-stage times of one frame without stalling the GPU.

On CPU the stage boundaries are ``perf_counter`` readings. On CUDA each boundary is an event recorded in
the stream and read once the frame's results have come back (the download synchronises anyway): a
``cuda.synchronize`` per boundary would keep the host from queueing the next stage's kernels while the
GPU finishes the last one, which costs what it measures.
"""
from __future__ import annotations

import time

import torch


class StageClock:
    """``start()``, then ``mark()`` after each stage, then ``stages(names)`` -> {name: ms}."""

    def __init__(self, device: torch.device):
        self._cuda = device.type == 'cuda'
        self._device = device
        self._marks: list = []

    def _now(self):
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self._device))   # the engine's device, not the current one
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._marks = [self._now()]

    def mark(self) -> None:
        self._marks.append(self._now())

    def stages(self, names: tuple[str, ...]) -> dict[str, float]:
        """Milliseconds between consecutive marks, one per name (as many names as marks after start)."""
        if len(names) != len(self._marks) - 1:
            raise ValueError(f'{len(names)} stage names for {len(self._marks) - 1} marked stages')
        marks = self._marks
        if self._cuda:
            marks[-1].synchronize()
            return {n: a.elapsed_time(b) for n, a, b in zip(names, marks, marks[1:])}
        return {n: (b - a) * 1e3 for n, a, b in zip(names, marks, marks[1:])}
