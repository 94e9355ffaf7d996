"""Arrays put aside until taken back, in memory up to a budget and on disk past it: what a propagation span
keeps from its backward pass for its forward pass, so that memory does not grow with the span's length.

A spill that will need disk reserves it when it starts (:class:`Spill` ``need_bytes``), against the folder's free
space less what the spills running there have reserved and not written yet: each span checked the free space alone,
so several workers spilling at once could together fill the disk the check exists to protect. The reservations are
files in the spills' own folders, read and written under a lock file in the spill folder, so worker processes (the
local pool, Dask workers sharing the dataset's disk) and threads see each other's; a spill's folder, and with it its
reservation, goes when it ends (or, killed, at the next run's start: ``run._propagate_locked``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
# what a span between two labels keeps in memory for its second pass before the rest goes to disk
SPILL_BUDGET = 256 * 2**20
# what a span keeps of each frame for its second pass, bytes a pixel: displacement (2 x float32) and confidence
# (float32); with the consistency check, also both flows of the frame's pair (2 x 2 x float32)
STATE_BYTES_PER_PIXEL = 3 * 4
FLOWS_BYTES_PER_PIXEL = 2 * 2 * 4
PREFIX = '.vidseg-propagate-'       # a spill's folder (the run removes those a killed run left)
LOCK_NAME = '.vidseg-spill.lock'    # hidden, a suffix no image or label reader takes
RESERVED_NAME = 'reserved'          # in a spill's folder: "bytes pid host"


def span_spill_bytes(frames: int, hw: tuple[int, int], flows: bool) -> int:
    """Bytes a span's second pass keeps for ``frames`` frames of ``hw`` (with both flows of each pair: ``flows``)."""
    return frames * hw[0] * hw[1] * (STATE_BYTES_PER_PIXEL + (FLOWS_BYTES_PER_PIXEL if flows else 0))


class Spill:
    """Arrays put aside by key until taken back: in memory up to ``budget_bytes``, the rest in ``.npy`` files of
    a temporary folder (``folder``: None = the system's), so what a span keeps for its second pass does not
    grow the process with the span's length. A context manager; the folder goes at exit."""

    def __init__(self, folder: str | Path | None = None, budget_bytes: int | None = None, need_bytes: int = 0,
                 what: str = 'the spill'):
        """``need_bytes``: what will be put at most (its part past the budget is reserved on the disk when entered,
        refused there with an OSError ENOSPC that says ``what`` needs it)."""
        self.folder, self.held = folder, 0
        self.budget = SPILL_BUDGET if budget_bytes is None else budget_bytes
        self.need, self.what = need_bytes, what
        self._mem: dict = {}
        self._disk: set = set()
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> 'Spill':
        if self.need > self.budget:
            self._tmp = _reserve(self.folder, self.need - self.budget, self.what)
        return self

    def __exit__(self, *exc) -> None:
        self._mem.clear()
        if self._tmp is not None:
            # the reservation first: a spill reading the folder meanwhile does not count its files as unwritten
            Path(self._tmp.name, RESERVED_NAME).unlink(missing_ok=True)
            self._tmp.cleanup()

    def __contains__(self, key) -> bool:
        return key in self._mem or key in self._disk

    def _file(self, key, n: int) -> Path:
        return Path(self._tmp.name) / f'{"_".join(map(str, key))}_{n}.npy'

    def put(self, key: tuple, *arrays: np.ndarray) -> None:
        size = sum(a.nbytes for a in arrays)
        if self.held + size <= self.budget:
            self._mem[key] = arrays
            self.held += size
            return
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=PREFIX, dir=self.folder)
        for n, arr in enumerate(arrays):
            np.save(self._file(key, n), arr, allow_pickle=False)
        self._disk.add(key)

    def take(self, key: tuple, count: int) -> tuple[np.ndarray, ...]:
        """The ``count`` arrays put under ``key`` (forgotten here)."""
        if key in self._mem:
            arrays = self._mem.pop(key)
            self.held -= sum(a.nbytes for a in arrays)
            return arrays
        self._disk.remove(key)
        files = [self._file(key, n) for n in range(count)]
        arrays = tuple(np.load(f, allow_pickle=False) for f in files)
        for f in files:
            f.unlink()
        return arrays


def _reserve(folder: str | Path | None, nbytes: int, what: str) -> tempfile.TemporaryDirectory | None:
    """A spill's folder in ``folder`` (None = the system's temporary folder) holding a reservation of ``nbytes``, or
    an OSError ENOSPC (saying ``what`` needs them) where they do not fit in the free space less what the other
    spills there have reserved and not written yet. None where the free space cannot be read (not there yet: the
    spill itself will say why)."""
    where = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    with _locked(where):
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return None
        reserved = _unwritten(where)
        if nbytes > free - reserved:
            held = (f' and {reserved / 1e9:.1f} GB of them reserved by other spans spilling now: label a frame '
                    'between them (or free space, or run fewer workers)' if reserved else
                    ': label a frame between them (or free space)')
            raise OSError(errno.ENOSPC, f'{what} needs {nbytes / 1e9:.1f} GB of temporary space here, '
                                        f'{free / 1e9:.1f} GB are free{held}', str(where))
        tmp = tempfile.TemporaryDirectory(prefix=PREFIX, dir=where)
        Path(tmp.name, RESERVED_NAME).write_text(f'{nbytes} {os.getpid()} {socket.gethostname()}\n')
        return tmp


def _unwritten(where: Path) -> int:
    """Bytes the spills in ``where`` have reserved and do not hold on disk now (each one's reservation less its
    files: what they may still write). A spill of a process of this host that is gone counts nothing."""
    total = 0
    for folder in where.glob(PREFIX + '*'):
        try:
            nbytes, pid, host = (folder / RESERVED_NAME).read_text().split()
            if host == socket.gethostname() and not _alive(int(pid)):
                continue
            written = 0
            for entry in os.scandir(folder):
                if entry.name != RESERVED_NAME:
                    with contextlib.suppress(FileNotFoundError):     # taken back meanwhile
                        written += entry.stat().st_size
        except (OSError, ValueError):    # no reservation (a spill under its budget's disk part), or going
            continue
        total += max(0, int(nbytes) - written)
    return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # another user's
        return True
    return True


@contextlib.contextmanager
def _locked(where: Path):
    """``where``'s spill lock held (waiting for it: it is held only to read and write reservations). Where it cannot
    be taken (no such folder, no locks on that file system), each spill checks alone, as before."""
    try:
        lock = open(where / LOCK_NAME, 'a')
    except OSError:
        lock = None
    if lock is None:
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:
            log.warning('%s: cannot lock (%s): spills running at once are not counted against each other',
                        where / LOCK_NAME, e.strerror or e)
        yield
