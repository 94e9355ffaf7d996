"""Process-wide allocator settings for the per-frame path.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start; it adapts only partly) with a
fresh ``mmap`` and gives it back on free, so each camera-sized buffer (an image message's data, its
serialisation, a resized frame, a tensor, MCAP chunk builders) page-faults again on every frame: about
1 ms per 640x480 rgb8 image (a 921,600-byte ``serialize_message`` took 1.8 ms, 0.09 ms with the buffers
reused; docs/benchmarks.md), and the recorder's BagWriter ran at ~100 instead of ~290 MB/s. Raising the
mmap threshold keeps such buffers in the heap, and a high trim threshold keeps freed heap memory for the
next frame instead of returning it to the kernel. Every node applies it at start (``ros.spin.run``).

Cost: up to ``TRIM_THRESHOLD`` bytes of freed memory per arena stay in the process. Set
``VIDSEG_MALLOC_TUNING=0`` to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 32 << 20    # glibc's maximum on 64-bit: buffers up to 32 MiB (a 1920x1080 float frame) reuse heap
TRIM_THRESHOLD = 256 << 20   # freed heap kept for reuse, per arena (the recorder's chunk builders need it)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # from <malloc.h>
ENV = 'VIDSEG_MALLOC_TUNING'


def tune_allocator() -> bool:
    """Apply the thresholds above (glibc only; elsewhere, or with VIDSEG_MALLOC_TUNING=0, nothing).
    True when glibc accepted both."""
    if os.environ.get(ENV, '1').strip() == '0':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl, macOS): its allocator behaves differently anyway
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
