"""How healthy is one camera of the segment node: the level and message of its /diagnostics status.

No rclpy import (unit-tested on its own): the node gathers the numbers, ``assess`` decides.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from vidseg_ros.text import short

OK, WARN, ERROR = 'OK', 'WARN', 'ERROR'
STUCK_FACTOR = 20          # a frame taking this many times the usual frame time means a stuck worker...
STUCK_MIN_S = 5.0          # ...but never less than this (first frames, a busy machine)
BAD_INPUT_MAJORITY = 0.5   # more than this share of recent frames rejected: ERROR
RATE_SHORTFALL = 0.5       # output below this share of what latest-frame-wins allows: WARN
WINDOW_S = 10.0            # recent = the last WINDOW_S seconds
MIN_FRAMES = 5             # no verdict on fewer recent frames
CAMERA_TEXT = 100          # a camera name is cut to this in messages (namespaces have no length limit)


class Outcomes:
    """Good/bad outcome of recent frames (thread-safe), for 'bad input dominates'."""

    def __init__(self, maxlen: int = 200):
        self._items: deque = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, ok: bool, now: float | None = None) -> None:
        with self._lock:
            self._items.append((time.monotonic() if now is None else now, bool(ok)))

    def recent(self, window_s: float = WINDOW_S, now: float | None = None) -> tuple[int, int]:
        """(frames, rejected) over the last ``window_s`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [ok for t, ok in self._items if now - t <= window_s]
        return len(recent), recent.count(False)


@dataclass
class CameraHealth:
    """What ``assess`` needs to know about one camera and the shared worker."""

    worker_alive: bool = True
    worker_error: str = ''
    busy_s: float = 0.0            # how long the worker has been on its current frame (0 when idle)
    busy_camera: str = ''          # whose frame that is: every camera reports the stuck worker, one owns it
    frame_ms: float = 0.0          # usual worker time per frame (p50), 0 when unknown
    input_hz: float = 0.0
    output_hz: float = 0.0
    cameras: int = 1               # cameras sharing the worker
    recent_frames: int = 0
    recent_rejected: int = 0
    recent_error: str = ''         # last error while it is recent, else ''
    trained: bool = True
    frames_out: int = 0
    unmatched: str = ''            # publishers DDS does not match with our input (incompatible QoS), said why


def worker_activity(frame: tuple[float, str, str] | None, loading: tuple[float, str] | None, now: float) -> str:
    """What the inference worker is on, for logs: ``frame`` (monotonic start, camera, stage) or ``loading``
    (monotonic start, model) -> "on a frame of camera 'x' (engine step) for 3 s", "loading model 'm' for 3 s";
    "between frames" when neither."""
    if frame:
        since, camera, stage = frame
        stage = f' ({stage})' if stage else ''
        return f'on a frame of camera {short(camera, CAMERA_TEXT)}{stage} for {now - since:.0f} s'
    if loading:
        return f'loading model {short(loading[1])} for {now - loading[0]:.0f} s'
    return 'between frames'


def assess(h: CameraHealth) -> tuple[str, str]:
    """(level, message), the most serious problem first."""
    if not h.worker_alive:
        return ERROR, f'inference worker stopped: {h.worker_error or "unknown reason"}; restarting the node'
    stuck_s = max(STUCK_MIN_S, STUCK_FACTOR * h.frame_ms / 1e3)
    if h.busy_s > stuck_s:
        whose = f' of camera {short(h.busy_camera, CAMERA_TEXT)}' if h.busy_camera else ''
        return ERROR, f'inference worker stuck on one frame{whose} for {h.busy_s:.1f} s (usual {h.frame_ms:.0f} ms)'
    if h.recent_frames >= MIN_FRAMES and h.recent_rejected > BAD_INPUT_MAJORITY * h.recent_frames:
        return ERROR, (f'bad input dominates: {h.recent_rejected} of the last {h.recent_frames} frames '
                       f'rejected; last: {h.recent_error or "-"}')
    if h.frame_ms > 0 and h.recent_frames >= MIN_FRAMES:
        good_hz = h.input_hz * (1 - h.recent_rejected / h.recent_frames)
        expected = min(good_hz, 1e3 / (h.frame_ms * max(1, h.cameras)))  # latest frame wins beyond capacity
        if h.output_hz < RATE_SHORTFALL * expected:
            return WARN, (f'output {h.output_hz:.1f} Hz is below the {expected:.1f} Hz expected '
                          f'(input {h.input_hz:.1f} Hz, {h.frame_ms:.0f} ms per frame)')
    if h.unmatched:
        return WARN, h.unmatched
    if h.recent_error:
        return WARN, h.recent_error
    if not h.trained:
        return WARN, 'running UNTRAINED weights'
    if h.frames_out == 0:
        return OK, 'waiting for images'
    return OK, ''
