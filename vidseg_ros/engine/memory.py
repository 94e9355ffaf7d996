"""Process-wide allocator settings for the per-frame path.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start; it adapts only partly) with a
fresh ``mmap`` and gives it back on free, so each camera-sized buffer (an image message's data, its
serialisation, a resized frame, a tensor, MCAP chunk builders) page-faults again on every frame: about
1 ms per 640x480 rgb8 image (a 921,600-byte ``serialize_message`` took 1.8 ms, 0.09 ms with the buffers
reused; docs/benchmarks.md), and the recorder's BagWriter ran at ~100 instead of ~290 MB/s. Raising the
mmap threshold keeps such buffers in the heap, and a high trim threshold keeps freed heap memory for the
next frame instead of returning it to the kernel. Every node applies it at start (``ros.spin.run``).

Cost: freed heap memory stays in the process: in the main arena above ``TRIM_THRESHOLD`` it goes back, but
the arenas of other threads (the inference worker, torch's, the recorder's writer) keep their peak. So a
buffer above ``MMAP_THRESHOLD`` is still mmapped (a transient 4K frame is given back at once), and the engine
calls :func:`give_back` when the frame size changes, which returns what the previous size left free in every
arena (``malloc_trim``). Set ``VIDSEG_MALLOC_TUNING=0`` to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 8 << 20     # buffers up to 8 MiB (a 1080p rgb8 frame) reuse heap; larger ones are mmapped and given back
TRIM_THRESHOLD = 256 << 20   # freed heap kept for reuse, per arena (the recorder's chunk builders need it)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # from <malloc.h>
ENV = 'VIDSEG_MALLOC_TUNING'
_tuned_libc = None   # the libc tune_allocator set up, for give_back


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
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    global _tuned_libc
    _tuned_libc = libc if ok else None
    return ok


def give_back() -> None:
    """Return the free memory of every arena to the kernel (after tune_allocator only: glibc's defaults
    return it themselves). Costs a few page faults on the next frames; call it on a change, not per frame."""
    if _tuned_libc is not None:
        _tuned_libc.malloc_trim(0)
