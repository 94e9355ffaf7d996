"""Arrays put aside until taken back, in memory up to a budget and on disk past it: what a propagation span
keeps from its backward pass for its forward pass, so that memory does not grow with the span's length."""
from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import numpy as np

# what a span between two labels keeps in memory for its second pass before the rest goes to disk
SPILL_BUDGET = 256 * 2**20


class Spill:
    """Arrays put aside by key until taken back: in memory up to ``budget_bytes``, the rest in ``.npy`` files of
    a temporary folder (``folder``: None = the system's), so what a span keeps for its second pass does not
    grow the process with the span's length. A context manager; the folder goes at exit."""

    def __init__(self, folder: str | Path | None = None, budget_bytes: int | None = None):
        self.folder, self.held = folder, 0
        self.budget = SPILL_BUDGET if budget_bytes is None else budget_bytes
        self._mem: dict = {}
        self._disk: set = set()
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> 'Spill':
        return self

    def __exit__(self, *exc) -> None:
        self._mem.clear()
        if self._tmp is not None:
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
            self._tmp = tempfile.TemporaryDirectory(prefix='.vidseg-propagate-', dir=self.folder)
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


def check_room(folder: str | Path | None, nbytes: int, what: str) -> None:
    """Refuse (OSError ENOSPC, saying ``what`` needs it) a spill of ``nbytes`` whose part past ``SPILL_BUDGET``
    does not fit in the free space of ``folder`` (None = the system's temporary folder): found when the disk was
    full, after the flows of the span had been computed, the dataset's disk full for whatever else writes there."""
    over = nbytes - SPILL_BUDGET
    if over <= 0:
        return
    where = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    try:
        free = shutil.disk_usage(where).free
    except OSError:     # not there (yet): the spill itself will say why
        return
    if over > free:
        raise OSError(errno.ENOSPC, f'{what} needs {over / 1e9:.1f} GB of temporary space here, {free / 1e9:.1f} GB '
                                    'are free: label a frame between them (or free space)', str(where))
