"""Recorder core without ROS: a queue bounded in bytes feeding a writer thread that owns a BagWriter.

The ROS node's callbacks only call :meth:`Recorder.put` (a deque append under a lock), so the
executor never waits for the disk. When the queue would exceed ``queue_max_bytes`` the new message
is dropped and counted for its topic; nothing is lost silently. Topic declarations, splits and the
final stop travel through the same queue, so they apply exactly between the messages around them.

The writer thread hands every item to a :class:`~vidseg_ros.data.recorder.sink.BagSink` (the disk side).
Disk full is handled by design (:mod:`vidseg_ros.data.recorder.disk_space`): every message is checked
against the estimated free space before it is written, and the space needed to close the file is
held in a reserve file, so the bag always ends with its summary and ``metadata.yaml``.

Snapshot mode keeps the newest messages in an in-memory ring bounded in bytes and/or seconds
instead of writing them; :meth:`Recorder.trigger_snapshot` moves that window into the write queue,
to be written as a new bag.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from vidseg_ros.data.bags.salvage import CODECS
from vidseg_ros.data.bags.writer import BagExistsError, new_bag_dir
from vidseg_ros.data.recorder.sink import BagSink, DiskFull, reason
from vidseg_ros.data.recorder.snapshot_ring import SnapshotRing

log = logging.getLogger(__name__)

# Slow topics (camera_info alone) would take minutes to fill a chunk, and a SIGKILL loses the chunk
# being filled: end a chunk at least this often so a crash costs at most about this much time.
_CHUNK_MAX_AGE_S = 1.0


def check_compression(compression: str) -> None:
    """Raise ValueError (one line, how to fix it) when ``compression``'s codec cannot be imported: mcap
    accepted the setting and failed only on the first chunk ("unsupported compression type zstandard"),
    after the recorder had said "recording", leaving an empty bag on each respawn."""
    if compression not in CODECS:
        return
    module, package = CODECS[compression]
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f'compression {compression!r} needs the Python package {package}, which cannot be '
                         f'imported ({e}): pip install {package}, or set compression to none') from e


@dataclasses.dataclass
class TopicCounters:
    """Per-topic counts.

    ``dropped``: lost by the recorder (queue full, or still queued or unwritten when recording
    stopped on an error); ``skipped``: arrived while paused; ``expired``: snapshot mode only, fell out
    of the buffered window before a snapshot was taken (by design, not a loss).
    """

    msgtype: str = ''
    received: int = 0
    written: int = 0
    bytes_written: int = 0
    dropped: int = 0
    skipped: int = 0
    expired: int = 0


class Recorder:
    """Owns the byte-bounded queue, the writer thread and the counters.

    Args:
        bag_dir: bag directory to create (must not exist; see :func:`new_bag_dir`). In snapshot
            mode, snapshot ``k`` is written to ``<bag_dir>_snapshot_<k>`` instead.
        compression: MCAP chunk compression (``'none'``, ``'zstd'``, ``'lz4'``).
        chunk_size_bytes: MCAP chunk size.
        max_bag_size_bytes: split files past this size (0: never).
        max_bag_duration_s: split files spanning this long (0: never).
        queue_max_bytes: bound of the queue; a message that does not fit is dropped and counted.
        min_free_disk_bytes: leave at least this much free; recording stops (bag closed, ``error``
            set) before a write would go below it, and does not start below it.
        fsync_bytes: force data to disk every this many bytes (0: at file close only).
        start_paused: start without recording until :meth:`resume`.
        direct_io: write with O_DIRECT where possible (see :mod:`vidseg_ros.data.bags.direct_file`).
        snapshot_mode: buffer in memory, write only on :meth:`trigger_snapshot`.
        snapshot_max_bytes: snapshot window bound in bytes (0: none).
        snapshot_max_duration_s: snapshot window bound in seconds of log time (0: none).
        next_output_dirs: when the disk is nearly full, close the bag properly and go on in a bag of
            the same name in the next of these directories (other disks); empty: stop recording.
        disk_usage: ``shutil.disk_usage``-like function (replaceable in tests).
        on_error: called once, from the writer thread, with the error text when recording stops
            (instead of logging it).
        clock: monotonic seconds for the chunk age and the disk checks (tests advance a fake one).
    """

    def __init__(self, bag_dir: str | Path, compression: str = 'none', chunk_size_bytes: int = 1 << 20,
                 max_bag_size_bytes: int = 0, max_bag_duration_s: float = 0.0,
                 queue_max_bytes: int = 512 << 20, min_free_disk_bytes: int = 1 << 30,
                 fsync_bytes: int = 0, start_paused: bool = False, direct_io: bool = True,
                 snapshot_mode: bool = False, snapshot_max_bytes: int = 0, snapshot_max_duration_s: float = 0.0,
                 next_output_dirs: list[str | Path] = (),
                 disk_usage: Callable = shutil.disk_usage, on_error: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        check_compression(compression)   # before anything is created
        self._ring = SnapshotRing(snapshot_max_bytes, snapshot_max_duration_s) if snapshot_mode else None
        self.queue_max_bytes = queue_max_bytes
        self._on_error = on_error
        self._clock = clock
        self.topics: dict[str, TopicCounters] = {}
        writer_args = dict(compression=compression, chunk_size_bytes=chunk_size_bytes,
                           max_bag_size_bytes=max_bag_size_bytes, max_bag_duration_s=max_bag_duration_s,
                           fsync_bytes=fsync_bytes, direct_io=direct_io)
        # snapshot mode stops on a full disk: it does not go on in next_output_dirs
        self._sink = BagSink(Path(bag_dir), self.topics, writer_args, min_free_disk_bytes, disk_usage, clock,
                             () if snapshot_mode else next_output_dirs)
        self.snapshot_mode = snapshot_mode
        self.snapshots: list[Path] = []
        if not snapshot_mode:
            self._sink.start()
        self.paused = start_paused
        self.error: str | None = None
        self.queued_bytes = 0
        self.peak_queued_bytes = 0
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_flush = clock()
        self._thread = threading.Thread(target=self._run, name='vidseg_bag_writer', daemon=True)
        self._thread.start()

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
            if self._closed:
                counters.dropped += 1
                return False
            if self._ring is not None:
                for old in self._ring.add(topic, data, log_time_ns, publish_time_ns):
                    self.topics[old].expired += 1
                return True
            if self._queue and self.queued_bytes + size > self.queue_max_bytes:
                counters.dropped += 1
                return False
            self._queue.append(('msg', topic, data, log_time_ns, publish_time_ns))
            self.queued_bytes += size
            self.peak_queued_bytes = max(self.peak_queued_bytes, self.queued_bytes)
            self._cond.notify()
        return True

    def trigger_snapshot(self) -> tuple[Path | None, str]:
        """Move the buffered window into the write queue; it becomes a new bag. Returns (bag, message)."""
        with self._cond:
            if self._ring is None or self._closed:
                return None, 'not in snapshot mode' if self._ring is None else 'recording has stopped'
            if not self._ring:
                return None, 'nothing buffered yet'
            if self.queued_bytes and self.queued_bytes + self._ring.bytes > self.queue_max_bytes:
                return None, 'the previous snapshot is still being written; window kept, try again'
            k = len(self.snapshots) + 1
            path = self.bag_dir.with_name(f'{self.bag_dir.name}_snapshot_{k}')
            while path.exists():  # never overwrite: a bag of that name may exist from another run
                k += 1
                path = self.bag_dir.with_name(f'{self.bag_dir.name}_snapshot_{k}')
            window, size = self._ring.take()
            self.snapshots.append(path)
            self._queue.append(('snapshot', path, window, size))
            self.queued_bytes += size
            self.peak_queued_bytes = max(self.peak_queued_bytes, self.queued_bytes)
            self._cond.notify()
        span = (window[-1][2] - window[0][2]) / 1e9
        return path, f'writing {len(window)} messages ({size / 1e6:.1f} MB, {span:.2f} s) to {path}'

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
        """``'error'``, ``'stopped'``, ``'paused'``, ``'buffering'`` (snapshot mode) or ``'recording'``."""
        if self.error:
            return 'error'
        if self._closed:
            return 'stopped'
        return 'paused' if self.paused else 'buffering' if self.snapshot_mode else 'recording'

    @property
    def bag_dir(self) -> Path:
        """The bag being recorded (another disk's after a move; snapshots are named after it)."""
        return self._sink.bag_dir

    @property
    def bags(self) -> list[Path]:
        """Every bag recorded, in recording order (snapshot bags are in ``snapshots``)."""
        return self._sink.bags

    @property
    def closed_ok(self) -> bool:
        """False when a file could not be closed, not even at its last complete chunk (see BagSink.close)."""
        return self._sink.closed_ok

    @property
    def current_file(self) -> str:
        """Path of the file being written ('' between files)."""
        writer = self._sink.writer
        path = writer.current_path if writer is not None else None
        return str(path) if path else ''

    @property
    def ring_bytes(self) -> int:
        """Bytes held in the snapshot window (0 outside snapshot mode)."""
        return self._ring.bytes if self._ring is not None else 0

    @property
    def free_disk_bytes(self) -> int:
        """Free disk space as last estimated by the writer thread."""
        space = self._sink.space
        return space.last_estimate if space is not None else self._sink.free_at_start

    @property
    def reserved_bytes(self) -> int:
        """Disk space held in reserve to close the current bag."""
        space = self._sink.space
        return space.reserved if space is not None else 0

    @property
    def files(self) -> list[Path]:
        """Every file started so far."""
        return self._sink.files

    def snapshot(self) -> dict[str, TopicCounters]:
        """A consistent copy of the per-topic counters."""
        with self._cond:
            return {t: dataclasses.replace(c) for t, c in self.topics.items()}

    # --- writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except Exception as e:  # noqa: BLE001 - a bug in the writer thread: said (on_error), not a thread dead in silence
            log.exception('the bag writer thread failed')
            self.error = self.error or f'the bag writer failed unexpectedly ({type(e).__name__}: {reason(e)})'
            with self._cond:
                self._closed = True
        if self.error:
            if self._on_error is None:
                log.error(self.error)
            else:
                self._on_error(self.error)

    def _serve(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(_CHUNK_MAX_AGE_S)
                item = self._queue[0] if self._queue else None
            try:
                if self._clock() - self._last_flush >= _CHUNK_MAX_AGE_S:
                    self._sink.flush()
                    self._last_flush = self._clock()
                if item is None:
                    continue
                if item[0] == 'stop':
                    self._finish()
                    return
                self._handle(item)
            except DiskFull as e:
                # A message in the file already is not counted as lost with the rest of the queue; a snapshot
                # item stays queued: its window holds the messages not written, counted by _fail.
                if e.written and item[0] == 'msg':
                    self._pop(item)
                self._fail(self.error or f'{e}; recording stopped')
                return
            except Exception as e:  # noqa: BLE001 - any write failure (ENOSPC, EIO) stops cleanly
                where = item[1] if item is not None and item[0] == 'snapshot' else self.bag_dir
                self._fail(self.error or f'writing {where} failed: {reason(e)}')
                return
            if item is not None:
                self._pop(item)

    def _pop(self, item: tuple) -> None:
        with self._cond:
            self._queue.popleft()
            if item[0] in ('msg', 'snapshot'):
                self.queued_bytes -= len(item[2]) if item[0] == 'msg' else item[3]

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == 'msg':
            self._sink.write_or_move_on(*item[1:])
        elif kind == 'topic':
            self._sink.add_topic(item[1:])
        elif kind == 'split':
            self._sink.split()
        elif kind == 'snapshot':
            self._sink.write_snapshot(item[1], item[2])

    def _finish(self) -> None:
        try:
            self._sink.close()
        except RuntimeError as e:
            self.error = f'{self.error}; {e}' if self.error else str(e)
        except Exception as e:  # noqa: BLE001 - unforeseen (a bug): before, it killed the writer thread in silence,
            # or on a stop read 'writing ... failed: ...; bag closed properly (summary and metadata.yaml written)'
            log.exception('closing %s failed unexpectedly', self.bag_dir)   # the traceback, for a bug report
            self._sink.closed_ok = False
            text = (f'closing {self.bag_dir} failed unexpectedly ({type(e).__name__}: {reason(e)}); the bag is NOT '
                    f'closed properly: its complete chunks are on disk, recover them with `vidseg bag-recover '
                    f'{self.bag_dir} --out DIR`')
            self.error = f'{self.error}; {text}' if self.error else text
        with self._cond:
            self._closed = True
            self._queue.clear()
            self.queued_bytes = 0
            if self._ring is not None:  # a window nobody asked for
                for topic, *_ in self._ring.take()[0]:
                    self.topics[topic].expired += 1

    def _fail(self, message: str) -> None:
        self.error = message
        with self._cond:
            # Everything still queued is lost: count it per topic, and close the queue in the same step. Closed
            # only after the bag (_finish), a message put meanwhile was neither written nor counted (37 of 100)
            for item in self._queue:
                if item[0] == 'msg':
                    self.topics[item[1]].dropped += 1
                elif item[0] == 'snapshot':
                    for m in item[2]:
                        self.topics[m[0]].dropped += 1
            self._queue.clear()
            self.queued_bytes = 0
            self._closed = True
        self._finish()
        if self.closed_ok and self.files:
            self.error += f'; bag closed properly ({len(self.files)} file(s), summary and metadata.yaml written)'
        elif self.closed_ok:
            self.error += '; no bag file was written'


__all__ = ['BagExistsError', 'Recorder', 'TopicCounters', 'new_bag_dir']
