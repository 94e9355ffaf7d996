"""Checks the segment node applies to what it receives (no rclpy import: unit-tested on its own).

Error-log throttling per (kind, camera), sanity of stamps and CameraInfo values, and the pre-flight
check of a model/device change before the parameter is accepted.
"""
from __future__ import annotations

import math
import time
import zipfile
from pathlib import Path

from vidseg_ros.data.images import clip, short

BAD_STAMP_S = 10.0        # a stamp further than this from the node clock is not a latency: `bad_stamp`
MAX_CAMERA_VALUE = 1e7    # |K|, |P| entries beyond this (pixels) are not a camera


class ErrorThrottle:
    """One throttle per key (e.g. (kind, camera)): a flood of one kind never hides another.

    ``allow`` answers whether to log now and how many were suppressed since the last log of that key.
    """

    def __init__(self):
        self._last: dict = {}
        self._suppressed: dict = {}

    def allow(self, key, period_s: float, now: float | None = None) -> tuple[bool, int]:
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


def stamp_is_sane(stamp_ns: int, now_ns: int, bound_s: float = BAD_STAMP_S) -> bool:
    """False for stamps (0, a different clock, the far future) that would make latency meaningless."""
    return abs(now_ns - stamp_ns) <= bound_s * 1e9


def camera_info_problem(width: int, height: int, k, d, r, p, max_pixels: int) -> str | None:
    """Why a CameraInfo cannot be rescaled and republished, or None when it can."""
    if width <= 0 or height <= 0:
        return f'camera_info has zero size ({width}x{height})'
    if width * height > max_pixels:
        return f'camera_info size {width}x{height} exceeds max_input_pixels {max_pixels}'
    for name, values in (('K', k), ('D', d), ('R', r), ('P', p)):
        for v in values:
            if not math.isfinite(v):
                return f'camera_info {name} holds a non-finite value ({v})'
            if name in ('K', 'P') and abs(v) > MAX_CAMERA_VALUE:
                return f'camera_info {name} holds an absurd value ({v:g})'
    # sensor_msgs/CameraInfo: an uncalibrated camera leaves K (and D, R, P) zeroed, K[0] == 0 says so; it goes out
    # sized to the mask, still zero (it was refused as bad input: a WARN for as long as the camera ran)
    if len(k) == 9 and k[0] != 0 and (k[0] < 0 or k[4] <= 0):
        return f'camera_info focal lengths must be positive (fx {k[0]:g}, fy {k[4]:g})'
    return None


def camera_info_image_size(info) -> tuple[int, int]:
    """(width, height) of the image a CameraInfo describes (REP-104): its ROI when set, else the full
    calibrated size, divided by the binning when > 1 (the ROI is in unbinned pixels)."""
    return ((info.roi.width or info.width) // max(info.binning_x, 1),
            (info.roi.height or info.height) // max(info.binning_y, 1))


def camera_info_size_problem(info_size: tuple[int, int], image_size: tuple[int, int]) -> str | None:
    """Why a CameraInfo does not describe this image, or None: K would be rescaled from the wrong size."""
    if info_size == tuple(image_size):
        return None
    return (f'camera_info describes a {info_size[0]}x{info_size[1]} image (after ROI and binning) but the '
            f'image is {image_size[0]}x{image_size[1]}')


# An ONNX file is a serialised ModelProto whose first field is its ir_version (field 1, a varint: tag 0x08);
# protobuf writes fields in number order and the ONNX checker requires ir_version, so every model starts so.
ONNX_FIRST_BYTE = b'\x08'


def check_model_spec(spec: str) -> None:
    """Raise ValueError when ``model`` does not resolve to a readable file (or untrained:<arch>).

    Cheap, for the parameter callback: the full load happens in the worker and rolls back on failure.
    """
    from vidseg_ros.engine.stream import UNTRAINED_PREFIX, resolve_model
    from vidseg_ros.models import MODELS
    try:
        path = resolve_model(spec)
    except Exception as e:  # noqa: BLE001 - CheckpointError and friends: a reason for the caller
        raise ValueError(clip(e, 400)) from None
    if path.startswith(UNTRAINED_PREFIX):
        if path[len(UNTRAINED_PREFIX):] not in MODELS:
            raise ValueError(f'unknown architecture in model {short(spec)}; known: {", ".join(sorted(MODELS))}')
        return
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
    except OSError as e:
        raise ValueError(f'cannot read model file {short(str(path))}: {e.strerror or e}') from None
    if path.suffix in ('.pt', '.ts') and not zipfile.is_zipfile(path):
        raise ValueError(f'model file {short(str(path))} is not a PyTorch archive (starts with {head!r})')
    if path.suffix == '.onnx' and not head:
        raise ValueError(f'model file {short(str(path))} is empty')
    if path.suffix == '.onnx' and head[:1] != ONNX_FIRST_BYTE:
        raise ValueError(f'model file {short(str(path))} is not an ONNX model (starts with {head!r})')


def check_device_for_model(device: str, model: str) -> None:
    """Raise ValueError unless ``device`` suits the runner that will serve ``model``: onnxruntime's providers
    for an ONNX file (a CPU build of torch beside onnxruntime-gpu runs cuda), torch's devices otherwise."""
    from vidseg_ros.engine.devices import check_device_for
    from vidseg_ros.engine.stream import resolve_model
    try:
        path = resolve_model(model)
    except Exception:  # noqa: BLE001 - check_model_spec reports a model that does not resolve
        path = model
    try:
        check_device_for(device, path)
    except ImportError as e:   # an ONNX model without onnxruntime: the load would fail the same way
        raise ValueError(f'model {short(str(path))} needs onnxruntime ({clip(e, 200)})') from None
