"""Tiny real videos for tests: an MJPG AVI of solid frames, and where its JPEG frames start (to damage or cut one)."""
from pathlib import Path

import cv2
import numpy as np
import pytest


def mjpg_avi(path, n: int, hw=(48, 64), fps: float = 25.0, step: int = 20, bgr=(1, 1, 1)) -> Path:
    """Write ``n`` solid frames to ``path`` as an MJPG AVI; skip the test where OpenCV cannot write one.

    Args:
        path: the .avi file to write.
        n: number of frames; frame ``i`` has value ``step * i`` in each channel whose ``bgr`` weight is 1.
        hw: frame height and width.
        fps: frame rate in the container.
        step: value added per frame.
        bgr: per-channel weights (OpenCV order), e.g. ``(0, 0, 1)`` for frames that ramp in red only.
    """
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (hw[1], hw[0]))
    if not writer.isOpened():
        pytest.skip('this OpenCV build writes no MJPG AVI')
    for i in range(n):
        writer.write(np.full((*hw, 3), tuple(c * step * i for c in bgr), np.uint8))
    writer.release()
    return path


def jpeg_starts(data: bytes) -> list[int]:
    """Offsets of every JPEG start marker (FF D8) in ``data``: in an MJPG AVI, where each frame begins."""
    return [i for i in range(len(data) - 1) if data[i:i + 2] == b'\xff\xd8']
