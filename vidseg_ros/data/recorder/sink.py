"""The recorder's disk side: one BagWriter at a time, with the reserve that closes it and the moves to
other disks.

Used from the recorder's writer thread only (:mod:`vidseg_ros.data.recorder.core` owns the queue and
the thread). Every message is checked against the estimated free space before it is written
(:mod:`vidseg_ros.data.recorder.disk_space`); on a nearly full disk the bag is closed with its reserve
and recording goes on in the next output directory, or :class:`DiskFull` tells the writer thread to
stop when none is left.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

from vidseg_ros.data.bags.direct_file import BLOCK
from vidseg_ros.data.bags.writer import BagWriter
from vidseg_ros.data.recorder.disk_space import DiskSpace
from vidseg_ros.data.recorder.seal import seal

log = logging.getLogger(__name__)

_DISK_CHECK_PERIOD_S = 0.5


def reason(error: BaseException) -> str:
    """An exception's words; its type where it has none (mcap's EndOfFile() once printed "failed ()")."""
    return str(error) or f'{type(error).__module__}.{type(error).__qualname__}, no message'


class DiskFull(RuntimeError):
    """The disk of the current bag is (nearly) full; ``written``: the message at hand is in the file."""

    def __init__(self, reason: str, written: bool = False):
        super().__init__(reason)
        self.written = written


class BagSink:
    """Writes messages into the current bag and keeps every file and bag it started.

    Args:
        bag_dir: the bag directory (named after it: moved-on bags, snapshot bags beside it).
        topics: the recorder's per-topic counters (``TopicCounters``), updated as messages are written.
        writer_args: ``BagWriter`` keyword arguments (compression, chunk and split sizes, fsync, direct_io).
        min_free_disk_bytes, disk_usage, clock: as :class:`vidseg_ros.data.recorder.core.Recorder`'s.
        next_dirs: output directories to go on in when the disk is nearly full (empty: stop instead).
    """

    def __init__(self, bag_dir: Path, topics: dict, writer_args: dict, min_free_disk_bytes: int,
                 disk_usage: Callable = shutil.disk_usage, clock: Callable[[], float] = time.monotonic,
                 next_dirs: list[str | Path] = ()):
        self.bag_dir = Path(bag_dir)
        self.min_free_disk_bytes = min_free_disk_bytes
        self._topics = topics
        self._writer_args = writer_args
        self._disk_usage = disk_usage
        self._clock = clock
        self._next_dirs = list(next_dirs)
        self._topic_args: dict[str, tuple] = {}  # topic -> BagWriter.add_topic arguments
        self._files: list[Path] = []
        self.bags: list[Path] = []               # in recording order (snapshots not included)
        self.closed_ok = True  # False when a file could not be closed, not even at its last complete chunk
        self.writer: BagWriter | None = None
        self.space: DiskSpace | None = None
        probe = self.bag_dir.parent
        self.free_at_start = disk_usage(probe).free
        if self.free_at_start < min_free_disk_bytes:
            raise OSError(f'only {self.free_at_start / 1e9:.2f} GB free on {probe}, below min_free_disk_bytes='
                          f'{min_free_disk_bytes / 1e9:.2f} GB; free space or lower the threshold')

    def start(self) -> None:
        """Open ``bag_dir`` (continuous recording; snapshot mode opens a bag per snapshot instead)."""
        self._open(self.bag_dir)
        self.bags.append(self.bag_dir)

    @property
    def files(self) -> list[Path]:
        """Every file started so far."""
        return self._files + (list(self.writer.files) if self.writer is not None else [])

    def _open(self, bag_dir: Path) -> None:
        """A new BagWriter for ``bag_dir`` with its disk reserve."""
        self.writer = BagWriter(bag_dir, **self._writer_args)
        self.space = self.writer.space = DiskSpace(bag_dir, self.min_free_disk_bytes, self._disk_usage,
                                                   _DISK_CHECK_PERIOD_S, self._clock)
        try:
            if not self.space.reserve(self.writer.closing_bytes()) or not self.space.room_for(0):
                raise OSError(f'no room on {bag_dir.parent} for even one chunk '
                              f'({self.writer.closing_bytes() / 1e6:.1f} MB) above min_free_disk_bytes='
                              f'{self.min_free_disk_bytes / 1e6:.1f} MB')
        except BaseException:
            # nothing was recorded: leave no reserve file and no empty bag folder behind (and no writer
            # of a removed folder for the close at the end to fail on)
            self.space.release()
            self.writer = self.space = None
            try:
                bag_dir.rmdir()
            except OSError:
                pass   # not empty (something else wrote there): leave it
            raise

    def add_topic(self, args: tuple) -> None:
        """Declare a topic in the current bag and in every bag opened later."""
        self._topic_args[args[0]] = args
        if self.writer is not None:
            self.writer.add_topic(*args)
            self._grow_reserve()

    def split(self) -> None:
        if self.writer is not None:
            self.writer.split()

    def flush(self) -> None:
        """End the chunk being filled (periodic: a crash costs at most one period) and look for ENOSPC."""
        if self.writer is None:
            return
        self.writer.flush()
        try:
            self._check_enospc()
        except DiskFull as e:
            self._disk_full(e)

    def write_or_move_on(self, *message) -> None:
        """Write one message; on a nearly full disk, go on in the next directory if one is left."""
        while True:
            try:
                return self._write(*message)
            except DiskFull as e:
                self._disk_full(e)
                if e.written:
                    return

    def _disk_full(self, e: DiskFull) -> None:
        """Go on in the next output directory, or re-raise (recording stops) when none is left."""
        if not self._next_dirs:
            raise e
        self._move_on(str(e))

    def _move_on(self, reason: str) -> None:
        """Close this bag properly and open one of the same name in the next output directory."""
        self.close()
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
            self.writer.add_topic(*args)
        self._grow_reserve()
        log.warning('%s; bag closed properly, recording goes on in %s', reason, path)

    def _write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        writer, space = self.writer, self.space
        if not space.room_for(writer.pending_bytes + len(data) + 2 * BLOCK):
            raise DiskFull(f'disk nearly full: {space.estimate() / 1e6:.1f} MB free on {writer.bag_dir} (+ '
                           f'{space.reserved / 1e6:.1f} MB reserved to close the bag), min_free_disk_bytes='
                           f'{self.min_free_disk_bytes / 1e6:.1f} MB')
        chunk_done = writer.write(topic, data, log_time_ns, publish_time_ns)
        counters = self._topics[topic]
        counters.written += 1
        counters.bytes_written += len(data)
        self._check_enospc(written=True)
        if chunk_done:
            self._grow_reserve(written=True)

    def _check_enospc(self, written: bool = False) -> None:
        """A write hit ENOSPC and went into the released reserve: move on while the bag can still close."""
        if self.space.enospc:
            raise DiskFull(f'disk full (ENOSPC) on {self.writer.bag_dir}: another program took the space', written)

    def _grow_reserve(self, written: bool = False) -> None:
        try:
            grown = self.space.reserve(self.writer.closing_bytes())
        except OSError as e:   # EFBIG (a file-size limit), EIO: no reserve, as on a full disk. Raised as it was, the
            # message at hand, already in the file and counted written, was counted dropped as well
            raise DiskFull(f'{reason(e)}', written) from e
        if not grown:
            raise DiskFull(f'disk nearly full: no room on {self.writer.bag_dir} to grow the reserve that closes the '
                           f'bag ({self.writer.closing_bytes() / 1e6:.1f} MB)', written)

    def write_snapshot(self, path: Path, window) -> None:
        """The snapshot window (a deque, emptied as written: what is left was not written) as bag ``path``."""
        if self.writer is not None:
            self._files += self.writer.files
        self._open(path)
        for args in self._topic_args.values():
            self.writer.add_topic(*args)
        self._grow_reserve()
        while window:
            try:
                self._write(*window[0])
            except DiskFull as e:
                if e.written:
                    window.popleft()  # in the file: not to be counted as lost with the rest
                raise
            window.popleft()
        self.close()
        log.info('snapshot written: %s', path)

    def close(self) -> None:
        """Close the current bag using its reserve; if even that fails, close its file where its last complete
        chunk ends (RuntimeError says what became of it)."""
        if self.writer is None:
            return
        self.space.release()
        try:
            self.writer.close()
        except Exception as e:  # noqa: BLE001 - EFBIG, EIO, ENOSPC past the reserve: the file is still kept
            raise RuntimeError(self._close_at_last_chunk(e)) from e
        finally:
            self._files += self.writer.files
            self.writer = None

    def _close_at_last_chunk(self, error: Exception) -> str:
        """Cut the file back to its last complete chunk and write its summary and metadata.yaml there
        (:mod:`vidseg_ros.data.recorder.seal`); only if even that fails is it left for ``vidseg bag-recover``."""
        writer = self.writer
        for topic, n in writer.pending_counts.items():  # in the chunk that never reached the file
            self._topics[topic].written -= n
            self._topics[topic].dropped += n
        what = f'closing {writer.current_path or writer.bag_dir} failed ({reason(error)})'
        try:
            path = writer.abandon()
        except OSError as e:   # EROFS: an I/O error turned the file system read-only
            path = None
            what += f'; cutting it back to its last complete chunk failed too ({reason(e)})'
        if path is not None:
            try:
                seal(path)
                writer.adopt_sealed(path)
                return f'{what}; cut back to its last complete chunk and closed there'
            except (OSError, ValueError) as e:
                what += f'; closing it at its last complete chunk failed too ({reason(e)})'
        self.closed_ok = False
        return (f'{what}; it is NOT closed: its complete chunks are on disk, recover them with `vidseg bag-recover '
                f'{writer.bag_dir} --out DIR_ON_ANOTHER_DISK`')
