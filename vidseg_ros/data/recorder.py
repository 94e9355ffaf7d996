"""Recorder core without ROS: a queue bounded in bytes feeding a writer thread that owns a BagWriter.

The ROS node's callbacks only call :meth:`Recorder.put` (a deque append under a lock), so the
executor never waits for the disk. When the queue would exceed ``queue_max_bytes`` the new message
is dropped and counted for its topic; nothing is lost silently. Topic declarations, splits and the
final stop travel through the same queue, so they apply exactly between the messages around them.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from vidseg_ros.data.bag_writer import BagExistsError, BagWriter

log = logging.getLogger(__name__)

_DISK_CHECK_PERIOD_S = 0.5
# Slow topics (camera_info alone) would take minutes to fill a chunk, and a SIGKILL loses the chunk
# being filled: end a chunk at least this often so a crash costs at most about this much time.
_CHUNK_MAX_AGE_S = 1.0


@dataclasses.dataclass
class TopicCounters:
    """Per-topic counts. ``dropped``: queue full; ``skipped``: arrived while paused."""

    msgtype: str = ''
    received: int = 0
    written: int = 0
    bytes_written: int = 0
    dropped: int = 0
    skipped: int = 0


def tune_malloc_for_large_buffers(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc reuse freed multi-megabyte buffers instead of mmap/munmap for each one.

    Every frame passes through several fresh buffers (rclpy bytes, MCAP record and chunk builders).
    By default glibc maps each buffer over 128 KB-32 MB anew and unmaps it on free, so the kernel
    zero-fills every page again: measured here, that system time tripled the CPU cost per GB and
    cut BagWriter throughput from ~290 to ~100 MB/s. Process-wide, so only the recorder's
    ``main()`` (and the bench) call it. Returns False where it does not apply (not glibc).
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(
            libc.mallopt(m_trim_threshold, trim_threshold))
    except (OSError, AttributeError):
        return False


def new_bag_dir(output_dir: str | Path, prefix: str = 'vidseg') -> Path:
    """A fresh bag path ``<output_dir>/<prefix>_YYYY_MM_DD-HH_MM_SS[_N]`` that does not exist yet."""
    output_dir = Path(output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    base = output_dir / f'{prefix}_{time.strftime("%Y_%m_%d-%H_%M_%S")}'
    path, n = base, 0
    while path.exists():
        n += 1
        path = base.with_name(f'{base.name}_{n}')
    return path


class Recorder:
    """Owns the byte-bounded queue, the writer thread and the counters.

    Args:
        bag_dir: bag directory to create (must not exist; see :func:`new_bag_dir`).
        compression: MCAP chunk compression (``'none'``, ``'zstd'``, ``'lz4'``).
        chunk_size_bytes: MCAP chunk size.
        max_bag_size_bytes: split files past this size (0: never).
        max_bag_duration_s: split files spanning this long (0: never).
        queue_max_bytes: bound of the queue; a message that does not fit is dropped and counted.
        min_free_disk_bytes: stop recording (bag closed, ``error`` set) below this free space.
        fsync_bytes: force data to disk every this many bytes (0: at file close only).
        start_paused: start without recording until :meth:`resume`.
        direct_io: write with O_DIRECT where possible (see :mod:`vidseg_ros.data.direct_file`).
        disk_usage: ``shutil.disk_usage``-like function (replaceable in tests).
        on_error: called once, from the writer thread, with the error text when recording stops.
    """

    def __init__(self, bag_dir: str | Path, compression: str = 'none', chunk_size_bytes: int = 1 << 20,
                 max_bag_size_bytes: int = 0, max_bag_duration_s: float = 0.0,
                 queue_max_bytes: int = 512 << 20, min_free_disk_bytes: int = 1 << 30,
                 fsync_bytes: int = 0, start_paused: bool = False, direct_io: bool = True,
                 disk_usage: Callable = shutil.disk_usage, on_error: Callable[[str], None] | None = None):
        self.bag_dir = Path(bag_dir)
        self.queue_max_bytes = queue_max_bytes
        self.min_free_disk_bytes = min_free_disk_bytes
        self._disk_usage = disk_usage
        self._on_error = on_error
        self.free_disk_bytes = self._check_parent_space()
        self._writer = BagWriter(self.bag_dir, compression=compression, chunk_size_bytes=chunk_size_bytes,
                                 max_bag_size_bytes=max_bag_size_bytes,
                                 max_bag_duration_s=max_bag_duration_s, fsync_bytes=fsync_bytes,
                                 direct_io=direct_io)
        self.topics: dict[str, TopicCounters] = {}
        self.paused = start_paused
        self.error: str | None = None
        self.queued_bytes = 0
        self.peak_queued_bytes = 0
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_disk_check = 0.0
        self._last_flush = time.monotonic()
        self._thread = threading.Thread(target=self._run, name='vidseg_bag_writer', daemon=True)
        self._thread.start()

    def _check_parent_space(self) -> int:
        probe = self.bag_dir.parent
        free = self._disk_usage(probe).free
        if free < self.min_free_disk_bytes:
            raise OSError(f'only {free / 1e9:.2f} GB free on {probe}, below min_free_disk_bytes='
                          f'{self.min_free_disk_bytes / 1e9:.2f} GB; free space or lower the threshold')
        return free

    # --- called from ROS callbacks (any thread) ---------------------------------------------------
    def add_topic(self, topic: str, msgtype: str, offered_qos_profiles: str | list = '',
                  type_hash: str = '') -> None:
        """Declare a topic before its first message (idempotent)."""
        with self._cond:
            if topic in self.topics:
                return
            self.topics[topic] = TopicCounters(msgtype=msgtype)
            self._queue.append(('topic', topic, msgtype, offered_qos_profiles, type_hash))
            self._cond.notify()

    def put(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int = 0) -> bool:
        """Queue one serialized message. Returns False when it is dropped (queue full) or skipped."""
        size = len(data)
        with self._cond:
            counters = self.topics[topic]
            counters.received += 1
            if self.paused:
                counters.skipped += 1
                return False
            if self._closed or (self._queue and self.queued_bytes + size > self.queue_max_bytes):
                counters.dropped += 1
                return False
            self._queue.append(('msg', topic, data, log_time_ns, publish_time_ns))
            self.queued_bytes += size
            self.peak_queued_bytes = max(self.peak_queued_bytes, self.queued_bytes)
            self._cond.notify()
        return True

    def pause(self) -> None:
        """Stop recording incoming messages (they are counted as skipped); queued ones still go to disk."""
        self.paused = True

    def resume(self) -> None:
        """Record incoming messages again."""
        self.paused = False

    def split(self) -> None:
        """Close the current file after the messages already queued; the next message starts a new file."""
        self._control(('split',))

    def stop(self, timeout: float | None = None) -> bool:
        """Write everything queued, close the bag (summary + metadata.yaml). Returns False on timeout."""
        self._control(('stop',))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _control(self, item: tuple) -> None:
        with self._cond:
            if not self._closed:
                self._queue.append(item)
                self._cond.notify()

    # --- diagnostics ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``'error'``, ``'stopped'``, ``'paused'`` or ``'recording'``."""
        if self.error:
            return 'error'
        if self._closed:
            return 'stopped'
        return 'paused' if self.paused else 'recording'

    @property
    def current_file(self) -> str:
        """Path of the file being written ('' between files)."""
        path = self._writer.current_path
        return str(path) if path else ''

    @property
    def files(self) -> list[Path]:
        """Every file started so far."""
        return list(self._writer.files)

    def snapshot(self) -> dict[str, TopicCounters]:
        """A consistent copy of the per-topic counters."""
        with self._cond:
            return {t: dataclasses.replace(c) for t, c in self.topics.items()}

    # --- writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(_CHUNK_MAX_AGE_S)
                item = self._queue[0] if self._queue else None
            if time.monotonic() - self._last_flush >= _CHUNK_MAX_AGE_S:
                try:
                    self._writer.flush()
                except Exception as e:  # noqa: BLE001
                    self._fail(f'writing {self.bag_dir} failed: {e}; recording stopped, bag closed')
                    return
                self._last_flush = time.monotonic()
            if item is None:
                continue
            if item[0] == 'stop':
                self._finish()
                return
            try:
                self._handle(item)
            except Exception as e:  # noqa: BLE001 - any write failure (ENOSPC, EIO) stops cleanly
                self._fail(f'writing {self.bag_dir} failed: {e}; recording stopped, bag closed')
                return
            with self._cond:
                self._queue.popleft()
                if item[0] == 'msg':
                    self.queued_bytes -= len(item[2])

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == 'msg':
            _, topic, data, log_time_ns, publish_time_ns = item
            self._check_disk()
            if self.error:
                raise RuntimeError(self.error)
            self._writer.write(topic, data, log_time_ns, publish_time_ns)
            counters = self.topics[topic]
            counters.written += 1
            counters.bytes_written += len(data)
        elif kind == 'topic':
            self._writer.add_topic(*item[1:])
        elif kind == 'split':
            self._writer.split()

    def _check_disk(self) -> None:
        now = time.monotonic()
        if now - self._last_disk_check < _DISK_CHECK_PERIOD_S:
            return
        self._last_disk_check = now
        self.free_disk_bytes = self._disk_usage(self.bag_dir).free
        if self.free_disk_bytes < self.min_free_disk_bytes:
            self.error = (f'only {self.free_disk_bytes / 1e9:.2f} GB free on {self.bag_dir}, below '
                          f'min_free_disk_bytes={self.min_free_disk_bytes / 1e9:.2f} GB; '
                          f'recording stopped and bag closed before the disk filled')

    def _finish(self) -> None:
        try:
            self._writer.close()
        except Exception as e:  # noqa: BLE001
            self.error = self.error or f'closing {self.bag_dir} failed: {e}'
            log.error(self.error)
        with self._cond:
            self._closed = True
            self._queue.clear()
            self.queued_bytes = 0

    def _fail(self, message: str) -> None:
        self.error = self.error or message
        log.error(self.error)
        with self._cond:
            # Everything still queued is lost: count it per topic before closing.
            for item in self._queue:
                if item[0] == 'msg':
                    self.topics[item[1]].dropped += 1
        self._finish()
        if self._on_error is not None:
            self._on_error(self.error)


__all__ = ['BagExistsError', 'Recorder', 'TopicCounters', 'new_bag_dir', 'tune_malloc_for_large_buffers']
