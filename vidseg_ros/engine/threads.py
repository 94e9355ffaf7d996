"""The ``num_threads`` setting in every thread pool that runs part of a frame on the CPU: torch's intra-op
threads (the model; tensors of pre/post-processing), OpenCV's pool (resize, upsampling, rendering) and
onnxruntime's intra-op pool of an ONNX model's sessions.

They differ in reach: torch's count is per thread (with OpenMP each thread keeps the count it first saw), so it is
set in the thread that runs the model, every frame (``use_threads``); OpenCV's (``cv2.setNumThreads``) is
process-wide, as torch's default is: other OpenCV work in the same process (a composed container) runs at it
too; onnxruntime's is fixed when a session is made, so a change rebuilds the sessions (``OnnxRunner.set_threads``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch

_DEFAULTS: dict[str, int] = {}   # torch's and OpenCV's counts before a num_threads setting first changed them
SPIN_KEY = 'session.intra_op.allow_spinning'    # onnxruntime's session config entry


@dataclass(frozen=True)
class ThreadCounts:
    """What an engine with one ``num_threads`` setting runs each pool at (0: leave that pool as it is)."""

    torch: int      # torch's intra-op threads, in the thread that runs the model
    opencv: int     # cv2.setNumThreads (process-wide)
    onnx: int       # intra_op_num_threads of an ONNX model's sessions; 0 = onnxruntime's default


def thread_counts(num_threads: int) -> ThreadCounts:
    """The counts of setting ``num_threads``: that number in every pool; for 0 torch's and OpenCV's own counts
    where an earlier setting changed them (a running node set back to 0), else 0 (a trainer's or a user's
    torch.set_num_threads stays), and onnxruntime's default."""
    if num_threads > 0:
        _DEFAULTS.setdefault('torch', torch.get_num_threads())
        _DEFAULTS.setdefault('opencv', cv2.getNumThreads())
        return ThreadCounts(num_threads, num_threads, num_threads)
    return ThreadCounts(_DEFAULTS.get('torch', 0), _DEFAULTS.get('opencv', 0), 0)


def use_threads(counts: ThreadCounts) -> None:
    """torch (in the calling thread) and OpenCV (process-wide) at ``counts``. Called where the model runs: a
    count set in another thread (a loader, the parameter callback) did not reach a worker that had already run
    the model."""
    if counts.torch and torch.get_num_threads() != counts.torch:
        torch.set_num_threads(counts.torch)
    if counts.opencv and cv2.getNumThreads() != counts.opencv:
        cv2.setNumThreads(counts.opencv)


def onnx_options(ort, num_threads: int):
    """onnxruntime SessionOptions for ``num_threads`` (0: its defaults). Set, the intra-op pool has that many
    threads (the caller's among them) and they sleep when idle instead of spinning: the setting exists to leave
    cores to other processes. The inter-op pool runs only in parallel execution mode (not used): same count."""
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = options.inter_op_num_threads = num_threads
        options.add_session_config_entry(SPIN_KEY, '0')
    return options


def onnx_threads(sess) -> int:
    """The intra-op thread count ``sess`` runs at: its option, or onnxruntime's default for 0."""
    return sess.get_session_options().intra_op_num_threads or onnx_default_threads()


def onnx_default_threads() -> int:
    """onnxruntime's intra-op count for intra_op_num_threads 0: one per physical core of the machine (its
    documented default; it does not follow the process's CPU affinity: under taskset -c 0 on 2 cores it still
    made a 2-thread pool). Physical cores are the distinct (package, core) pairs of the CPUs' topology."""
    cores = set()
    for topology in Path('/sys/devices/system/cpu').glob('cpu[0-9]*/topology'):
        try:
            cores.add(((topology / 'physical_package_id').read_text().strip(),
                       (topology / 'core_id').read_text().strip()))
        except OSError:     # an offline CPU, or no sysfs
            continue
    return len(cores) or os.cpu_count() or 1
