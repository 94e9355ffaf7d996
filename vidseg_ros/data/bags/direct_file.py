"""Append-only file for the bag writer: O_DIRECT where the filesystem allows, crash-consistent.

Why O_DIRECT: with buffered writes every byte is copied into the page cache and the kernel then
has to manage (write back, reclaim) those pages. Measured on the development VM this cost
0.25-2.7 s of system CPU per GB written, more than everything else the recorder does; O_DIRECT
writes from an aligned staging buffer cost ~0.05 s/GB and leave the page cache to other programs.

Bytes are staged in a page-aligned buffer and written in whole 4 KiB blocks. :meth:`sync_point`
(called by the bag writer after each MCAP chunk) also writes the last partial block zero-padded,
so every completed chunk is in the file at once; that block is rewritten as more data arrives, and
:meth:`close` truncates the file to its real length. A file left by a crash can therefore end in
up to 4 KiB of zeros after its last chunk, which the recovery reads as the end of the data.

Where O_DIRECT is refused (tmpfs, some network filesystems) the same class writes through the page
cache with plain ``pwrite``. ``fdatasync`` runs in a helper thread every ``fsync_bytes`` (file size
metadata and device caches), so the writer never waits for it.

Disk full: each write reports the file's growth to an optional
:class:`vidseg_ros.data.recorder.disk_space.DiskSpace`; on ``ENOSPC`` that releases its reserve and the
write is retried once. If it still fails, :meth:`abandon` cuts the file back to the end of the last
complete chunk, leaving exactly what a SIGKILL would have left.
"""
from __future__ import annotations

import errno
import mmap
import os
import threading
from pathlib import Path

BLOCK = 4096

# out of space: the disk is full, or the user's quota is spent (NFS/home directories); handled alike
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class AppendFile:
    """Write-only, append-only file with ``write``/``tell``/``flush``/``close`` for ``mcap.Writer``.

    Args:
        path: file to create; raises FileExistsError if it exists (bags are never overwritten).
        fsync_bytes: ``fdatasync`` in a helper thread after this many bytes (0: only at close).
        direct: try O_DIRECT (falls back to buffered writes when unsupported).
        stage_bytes: staging buffer size (a multiple of 4 KiB).
        space: free-space bookkeeping told about growth and ENOSPC (``added``, ``on_enospc``).
    """

    def __init__(self, path: str | Path, fsync_bytes: int = 0, direct: bool = True, stage_bytes: int = 16 << 20,
                 space=None):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._dfd = -1
        if direct and hasattr(os, 'O_DIRECT'):
            try:
                self._dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self._dfd = -1
        self._stage = mmap.mmap(-1, stage_bytes)  # anonymous maps are page-aligned, as O_DIRECT needs
        self._staged = 0  # bytes in the stage
        self._stage_offset = 0  # file offset of the stage's first byte (block-aligned)
        self._pos = 0
        self._end = 0  # file size reached so far (padding included)
        self.good_pos = 0  # end of the data put into the file by the last sync_point
        self._space = space
        self._unsynced = 0
        self._fsync_bytes = fsync_bytes
        self._sync_wanted = threading.Event()
        self._sync_error: OSError | None = None
        self._closing = False
        self._syncer = None
        if fsync_bytes:
            self._syncer = threading.Thread(target=self._sync_loop, name='vidseg_bag_fsync', daemon=True)
            self._syncer.start()

    @property
    def direct(self) -> bool:
        """True while writes bypass the page cache."""
        return self._dfd >= 0

    def _sync_loop(self) -> None:
        while True:
            self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._closing:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as e:  # ENOSPC/EIO from delayed allocation: the writer raises it at its next sync point
                self._sync_error = e
                return

    def write(self, data) -> int:
        view = memoryview(data).cast('B')
        size = view.nbytes
        capacity = len(self._stage)
        while view.nbytes:
            n = min(view.nbytes, capacity - self._staged)
            self._stage[self._staged:self._staged + n] = view[:n]
            self._staged += n
            view = view[n:]
            if self._staged == capacity:
                self._drain(pad=False)
        self._pos += size
        self._unsynced += size
        if self._fsync_bytes and self._unsynced >= self._fsync_bytes:
            self._sync_wanted.set()  # a sync already running just picks this up next
            self._unsynced = 0
        return size

    def sync_point(self) -> None:
        """Put everything written so far into the file (last partial block zero-padded)."""
        if self._sync_error is not None:
            raise self._sync_error
        self._drain(pad=True)
        self.good_pos = self._pos

    def _drain(self, pad: bool) -> None:
        whole = self._staged // BLOCK * BLOCK
        end = whole
        if pad and self._staged > whole:
            end = whole + BLOCK
            self._stage[self._staged:end] = bytes(end - self._staged)
        if end:
            with memoryview(self._stage) as stage:
                self._pwrite(stage[:end], self._stage_offset)
        if whole:  # keep the partial block staged: it is rewritten, longer, next time
            rest = self._staged - whole
            self._stage[0:rest] = self._stage[whole:self._staged]
            self._stage_offset += whole
            self._staged = rest

    def _pwrite(self, view: memoryview, offset: int) -> None:
        retried = False
        while view.nbytes:
            try:
                n = self._pwrite_some(view, offset)
            except OSError as e:
                if e.errno not in DISK_FULL or retried or self._space is None or not self._space.on_enospc():
                    raise
                retried = True
                continue
            if self._space is not None and offset + n > self._end:
                self._space.added(offset + n - self._end)
            self._end = max(self._end, offset + n)
            view = view[n:]
            offset += n

    def _pwrite_some(self, view: memoryview, offset: int) -> int:
        while True:
            if self._dfd >= 0:
                try:
                    return os.pwrite(self._dfd, view, offset)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    os.close(self._dfd)  # this filesystem takes O_DIRECT opens but not the writes
                    self._dfd = -1
            else:
                return os.pwrite(self._fd, view, offset)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Write what is staged, cut the padding, fsync and close."""
        if self._fd < 0:
            return
        self._drain(pad=True)
        self._close(self._pos)

    def abandon(self) -> int:
        """Close without writing what is staged; the file ends with the last complete chunk. Returns its size."""
        if self._fd >= 0:
            self._close(self.good_pos, strict=False)
        return self.good_pos

    def _close(self, size: int, strict: bool = True) -> None:
        if self._syncer is not None:
            self._closing = True
            self._sync_wanted.set()
            self._syncer.join()
        try:
            try:
                os.ftruncate(self._fd, size)
                os.fsync(self._fd)
            except OSError:
                if strict:
                    raise
        finally:    # a disk turned read-only (EROFS from ftruncate) left both descriptors open
            if self._dfd >= 0:
                os.close(self._dfd)
            os.close(self._fd)
            self._fd = self._dfd = -1
            try:
                self._stage.close()
            except BufferError:  # a failed write's traceback still holds a view: the GC frees it later
                pass
