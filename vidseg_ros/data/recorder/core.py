"""Recorder core without ROS: a queue bounded in bytes feeding a writer thread that owns a BagWriter.

The ROS node's callbacks only call :meth:`Recorder.put` (a deque append under a lock), so the
executor never waits for the disk. When the queue would exceed ``queue_max_bytes`` the new message
is dropped and counted for its topic; nothing is lost silently. Topic declarations, splits and the
final stop travel through the same queue, so they apply exactly between the messages around them.

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
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from vidseg_ros.data.bags.writer import BagExistsError, BagWriter, new_bag_dir
from vidseg_ros.data.bags.direct_file import BLOCK, tune_malloc_for_large_buffers
from vidseg_ros.data.recorder.disk_space import DiskSpace
from vidseg_ros.data.recorder.snapshot_ring import SnapshotRing

log = logging.getLogger(__name__)

_DISK_CHECK_PERIOD_S = 0.5
# Slow topics (camera_info alone) would take minutes to fill a chunk, and a SIGKILL loses the chunk
# being filled: end a chunk at least this often so a crash costs at most about this much time.
_CHUNK_MAX_AGE_S = 1.0


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


class _DiskFull(RuntimeError):
    """The disk of the current bag is (nearly) full; ``written``: the message at hand is in the file."""

    def __init__(self, reason: str, written: bool = False):
        super().__init__(reason)
        self.written = written


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
        self._ring = SnapshotRing(snapshot_max_bytes, snapshot_max_duration_s) if snapshot_mode else None
        self.bag_dir = Path(bag_dir)
        self.queue_max_bytes = queue_max_bytes
        self.min_free_disk_bytes = min_free_disk_bytes
        self._disk_usage = disk_usage
        self._on_error = on_error
        self._clock = clock
        self._writer_args = dict(compression=compression, chunk_size_bytes=chunk_size_bytes,
                                 max_bag_size_bytes=max_bag_size_bytes, max_bag_duration_s=max_bag_duration_s,
                                 fsync_bytes=fsync_bytes, direct_io=direct_io)
        self._free_at_start = self._check_parent_space()
        self.snapshot_mode = snapshot_mode
        self.snapshots: list[Path] = []
        self.bags: list[Path] = [] if snapshot_mode else [self.bag_dir]  # in recording order
        self._next_dirs = list(next_output_dirs)
        self._topic_args: dict[str, tuple] = {}  # topic -> BagWriter.add_topic arguments
        self._files: list[Path] = []
        self._writer: BagWriter | None = None
        self._space: DiskSpace | None = None
        if not snapshot_mode:
            self._open(self.bag_dir)
        self.topics: dict[str, TopicCounters] = {}
        self.paused = start_paused
        self.error: str | None = None
        self.closed_ok = True  # False when a file could not be finished (see BagWriter.abandon)
        self.queued_bytes = 0
        self.peak_queued_bytes = 0
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_flush = clock()
        self._thread = threading.Thread(target=self._run, name='vidseg_bag_writer', daemon=True)
        self._thread.start()

    def _check_parent_space(self) -> int:
        probe = self.bag_dir.parent
        free = self._disk_usage(probe).free
        if free < self.min_free_disk_bytes:
            raise OSError(f'only {free / 1e9:.2f} GB free on {probe}, below min_free_disk_bytes='
                          f'{self.min_free_disk_bytes / 1e9:.2f} GB; free space or lower the threshold')
        return free

    def _open(self, bag_dir: Path) -> None:
        """A new BagWriter for ``bag_dir`` with its disk reserve (called at start or per snapshot)."""
        self._writer = BagWriter(bag_dir, **self._writer_args)
        self._space = self._writer.space = DiskSpace(bag_dir, self.min_free_disk_bytes, self._disk_usage,
                                                     _DISK_CHECK_PERIOD_S, self._clock)
        try:
            if not self._space.reserve(self._writer.closing_bytes()) or not self._space.room_for(0):
                raise OSError(f'no room on {bag_dir.parent} for even one chunk '
                              f'({self._writer.closing_bytes() / 1e6:.1f} MB) above min_free_disk_bytes='
                              f'{self.min_free_disk_bytes / 1e6:.1f} MB')
        except BaseException:
            # nothing was recorded: leave no reserve file and no empty bag folder behind (and no writer
            # of a removed folder for the close at the end to fail on)
            self._space.release()
            self._writer = self._space = None
            try:
                bag_dir.rmdir()
            except OSError:
                pass   # not empty (something else wrote there): leave it
            raise

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
    def current_file(self) -> str:
        """Path of the file being written ('' between files)."""
        path = self._writer.current_path if self._writer is not None else None
        return str(path) if path else ''

    @property
    def ring_bytes(self) -> int:
        """Bytes held in the snapshot window (0 outside snapshot mode)."""
        return self._ring.bytes if self._ring is not None else 0

    @property
    def free_disk_bytes(self) -> int:
        """Free disk space as last estimated by the writer thread."""
        space = self._space
        return space.last_estimate if space is not None else self._free_at_start

    @property
    def reserved_bytes(self) -> int:
        """Disk space held in reserve to close the current bag."""
        space = self._space
        return space.reserved if space is not None else 0

    @property
    def files(self) -> list[Path]:
        """Every file started so far."""
        return self._files + (list(self._writer.files) if self._writer is not None else [])

    def snapshot(self) -> dict[str, TopicCounters]:
        """A consistent copy of the per-topic counters."""
        with self._cond:
            return {t: dataclasses.replace(c) for t, c in self.topics.items()}

    # --- writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        self._serve()
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
                    if self._writer is not None:
                        self._writer.flush()
                        try:
                            self._check_enospc()
                        except _DiskFull as e:
                            self._disk_full(e)
                    self._last_flush = self._clock()
                if item is None:
                    continue
                if item[0] == 'stop':
                    self._finish()
                    return
                self._handle(item)
            except _DiskFull as e:
                # A message in the file already is not counted as lost with the rest of the queue; a snapshot
                # item stays queued: its window holds the messages not written, counted by _fail.
                if e.written and item[0] == 'msg':
                    self._pop(item)
                self._fail(self.error or f'{e}; recording stopped')
                return
            except Exception as e:  # noqa: BLE001 - any write failure (ENOSPC, EIO) stops cleanly
                self._fail(self.error or f'writing {self.bag_dir} failed: {e}')
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
            self._write_or_move_on(*item[1:])
        elif kind == 'topic':
            self._topic_args[item[1]] = item[1:]
            if self._writer is not None:
                self._writer.add_topic(*item[1:])
                self._grow_reserve()
        elif kind == 'split' and self._writer is not None:
            self._writer.split()
        elif kind == 'snapshot':
            self._write_snapshot(item[1], item[2])

    def _write_or_move_on(self, *message) -> None:
        """Write one message; on a nearly full disk, go on in the next directory if one is left."""
        while True:
            try:
                return self._write(*message)
            except _DiskFull as e:
                self._disk_full(e)
                if e.written:
                    return

    def _disk_full(self, e: '_DiskFull') -> None:
        """Go on in the next output directory, or re-raise (recording stops) when none is left."""
        if not self._next_dirs or self.snapshot_mode:
            raise e
        self._move_on(str(e))

    def _move_on(self, reason: str) -> None:
        """Close this bag properly and open one of the same name in the next output directory."""
        self._close_writer()
        directory = Path(self._next_dirs.pop(0)).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        path, n = directory / self.bag_dir.name, 0
        while path.exists():
            n += 1
            path = directory / f'{self.bag_dir.name}_{n}'
        self._open(path)
        self.bag_dir = path
        self.bags.append(path)
        for args in self._topic_args.values():
            self._writer.add_topic(*args)
        self._grow_reserve()
        log.warning('%s; bag closed properly, recording goes on in %s', reason, path)

    def _write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        writer, space = self._writer, self._space
        if not space.room_for(writer.pending_bytes + len(data) + 2 * BLOCK):
            raise _DiskFull(f'disk nearly full: {space.estimate() / 1e6:.1f} MB free on {self.bag_dir} (+ '
                            f'{space.reserved / 1e6:.1f} MB reserved to close the bag), min_free_disk_bytes='
                            f'{self.min_free_disk_bytes / 1e6:.1f} MB')
        chunk_done = writer.write(topic, data, log_time_ns, publish_time_ns)
        counters = self.topics[topic]
        counters.written += 1
        counters.bytes_written += len(data)
        self._check_enospc(written=True)
        if chunk_done:
            self._grow_reserve(written=True)

    def _check_enospc(self, written: bool = False) -> None:
        """A write hit ENOSPC and went into the released reserve: move on while the bag can still close."""
        if self._space.enospc:
            raise _DiskFull(f'disk full (ENOSPC) on {self.bag_dir}: another program took the space', written)

    def _grow_reserve(self, written: bool = False) -> None:
        if not self._space.reserve(self._writer.closing_bytes()):
            raise _DiskFull(f'disk nearly full: no room on {self.bag_dir} to grow the reserve that closes the '
                            f'bag ({self._writer.closing_bytes() / 1e6:.1f} MB)', written)

    def _write_snapshot(self, path: Path, window) -> None:
        if self._writer is not None:
            self._files += self._writer.files
        self._open(path)
        for args in self._topic_args.values():
            self._writer.add_topic(*args)
        self._grow_reserve()
        while window:
            try:
                self._write(*window[0])
            except _DiskFull as e:
                if e.written:
                    window.popleft()  # in the file: not to be counted as lost with the rest
                raise
            window.popleft()
        self._close_writer()
        log.info('snapshot written: %s', path)

    def _close_writer(self) -> None:
        """Close the current bag using its reserve; if even that fails, keep its complete chunks."""
        if self._writer is None:
            return
        self._space.release()
        try:
            self._writer.close()
        except Exception as e:  # noqa: BLE001
            self.closed_ok = False
            for topic, n in self._writer.pending_counts.items():  # in the chunk that never reached the file
                self.topics[topic].written -= n
                self.topics[topic].dropped += n
            path = self._writer.abandon()
            raise RuntimeError(f'closing {path or self._writer.bag_dir} failed ({e}); it is NOT closed: its '
                               f'complete chunks are on disk, recover them with `vidseg bag-recover '
                               f'{self._writer.bag_dir} --out DIR_ON_ANOTHER_DISK`') from e
        finally:
            self._files += self._writer.files
            self._writer = None

    def _finish(self) -> None:
        try:
            self._close_writer()
        except RuntimeError as e:
            self.error = f'{self.error}; {e}' if self.error else str(e)
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
            # Everything still queued is lost: count it per topic before closing.
            for item in self._queue:
                if item[0] == 'msg':
                    self.topics[item[1]].dropped += 1
                elif item[0] == 'snapshot':
                    for m in item[2]:
                        self.topics[m[0]].dropped += 1
        self._finish()
        if self.closed_ok:
            self.error += f'; bag closed properly ({len(self.files)} file(s), summary and metadata.yaml written)'


__all__ = ['BagExistsError', 'Recorder', 'TopicCounters', 'new_bag_dir', 'tune_malloc_for_large_buffers']
