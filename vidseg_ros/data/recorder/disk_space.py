"""Disk-full safety for the recorder: space held back to close a bag, and a per-write free-space estimate.

A polling margin cannot work at camera rates (27 MB/s fills a 14 MB margin between two 0.5 s
checks), so the recorder does two things instead:

- **A reserve file** (``<bag>/.vidseg_reserve``, allocated with ``posix_fallocate``) holds the bytes
  needed to finish the file being written: the chunk in progress, the MCAP summary (which grows with
  every chunk) and ``metadata.yaml``. It is released (deleted) just before the bag is closed, and at
  once if a write fails with ``ENOSPC`` anyway (another program filled the disk): the write is then
  retried into the freed space and the bag is closed properly.
- **A per-write estimate**: free space read by ``statvfs`` at the last check minus the bytes this
  process added to the disk since. It costs a subtraction per message; ``statvfs`` runs at most
  every ``check_period_s``. Space taken by other programs between two checks is measured as a rate
  and kept as an extra margin.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from vidseg_ros.data.bags.direct_file import DISK_FULL

log = logging.getLogger(__name__)

RESERVE_NAME = '.vidseg_reserve'
_STEP = 1 << 20  # the reserve grows in whole MiB so that it is resized rarely


class DiskSpace:
    """Free-space bookkeeping for one bag directory.

    Args:
        directory: the bag directory (the reserve file lives in it).
        min_free_bytes: keep at least this much free for other programs.
        disk_usage: ``shutil.disk_usage``-like function (replaceable in tests).
        check_period_s: longest time between two ``statvfs`` reads.
        clock: monotonic seconds (replaceable in tests).
    """

    def __init__(self, directory: str | Path, min_free_bytes: int = 0, disk_usage: Callable = shutil.disk_usage,
                 check_period_s: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.directory = Path(directory)
        self.reserve_path = self.directory / RESERVE_NAME
        self.min_free_bytes = min_free_bytes
        self.check_period_s = check_period_s
        self._disk_usage = disk_usage
        self._clock = clock
        self.reserved = 0
        self.released = False  # the reserve was given up (the bag is closing, or ENOSPC happened)
        self.enospc = False  # a write failed with ENOSPC
        self.foreign_rate = 0.0  # bytes/s taken by other programs, as observed between checks
        self._added = 0  # bytes this process added to the disk since the last check
        self._checked_at = clock()
        self.free = self._disk_usage(self.directory).free

    def added(self, nbytes: int) -> None:
        """Account bytes this process just added to the disk (file growth)."""
        self._added += nbytes

    @property
    def margin(self) -> int:
        """Bytes that must stay free after a write: the setting plus what others may take meanwhile."""
        return self.min_free_bytes + int(2 * self.foreign_rate * self.check_period_s)

    def estimate(self) -> int:
        """Free bytes now, estimated without a system call; re-read at most every ``check_period_s``."""
        now = self._clock()
        if now - self._checked_at >= self.check_period_s:
            free = self._disk_usage(self.directory).free
            foreign = max(0, self.free - self._added - free) / max(now - self._checked_at, 1e-3)
            self.foreign_rate = max(foreign, 0.5 * self.foreign_rate)  # decays slowly after a burst
            self.free, self._added, self._checked_at = free, 0, now
        return self.free - self._added

    @property
    def last_estimate(self) -> int:
        """The latest estimate, without reading the disk (safe to call from another thread)."""
        return self.free - self._added

    def room_for(self, nbytes: int) -> bool:
        """True when ``nbytes`` more can be written and the margin still stays free."""
        return self.estimate() - nbytes >= self.margin

    def reserve(self, nbytes: int) -> bool:
        """Grow the reserve file to at least ``nbytes`` (never shrinks). False when the disk cannot hold it."""
        if self.released or nbytes <= self.reserved:
            return not self.released
        size = -(-nbytes // _STEP) * _STEP
        fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                for offset in range(self.reserved, size, _STEP):  # no fallocate here: write the zeros
                    os.pwrite(fd, bytes(_STEP), offset)
                os.fsync(fd)
        except OSError as e:
            if e.errno not in DISK_FULL:   # EFBIG (a file-size limit), EIO: it said "[Errno 27] File too large"
                raise OSError(e.errno, f'cannot reserve {size / 1e6:.1f} MB to close the bag ({e.strerror})',
                              str(self.reserve_path)) from e
            return False
        finally:
            os.close(fd)
        self._added += size - self.reserved
        self.reserved = size
        return True

    def release(self) -> bool:
        """Delete the reserve file. Returns True when that freed space (the first time only)."""
        if self.released:
            return False
        self.released = True
        freed = self.reserved
        try:
            self.reserve_path.unlink(missing_ok=True)
        except OSError:   # EROFS: an I/O error turned the file system read-only; closing the bag says so
            freed = 0
        self._added -= freed
        self.reserved = 0
        return freed > 0

    def on_enospc(self) -> bool:
        """Hook for the file writer: a write failed with ENOSPC. True when it is worth retrying."""
        self.enospc = True
        freed = self.release()
        if freed:
            log.error('disk full on %s: released the reserve to close the bag properly', self.directory)
        return freed
