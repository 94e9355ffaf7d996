"""One writer at a time: an exclusive, non-blocking lock file in the folder a command writes.

The commands that change a dataset (extract, label-import, propagate, make-variant; finetune's output folder)
read its ``index.csv`` at the start and write it back at the end with their own rows: two at once each wrote
what it had read plus its own rows, and the one ending last dropped the other's (two extracts into one folder:
60 frames on disk, 30 indexed). The second writer is now refused at once, before it writes anything. Readers
(train, eval) take no lock: the index is replaced atomically. Training's ``train.lock`` is taken by ``lock_file`` too.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import IO

from vidseg_ros.data.datasets.layouts import INDEX_NAME, has_index

log = logging.getLogger(__name__)
LOCK_NAME = '.vidseg.lock'      # hidden, and a suffix no image or label reader takes
_HELD: dict[tuple[str, int], list] = {}     # (lock path, thread) -> [lock file, depth]: nested use in one thread
_HELD_GUARD = threading.Lock()


class LockHeld(Exception):
    """The lock is held by another process (``pid`` as it wrote it, or 'unknown')."""

    def __init__(self, pid: str):
        super().__init__(pid)
        self.pid = pid


def lock_file(path: Path) -> IO[str] | None:
    """``path`` (created when missing) locked exclusively, without waiting, this process's id written in it;
    closing the file releases the lock. LockHeld when another process holds it. None, with a warning, where
    the file system has no locks (nothing is refused there, as before)."""
    for _ in range(3):
        lock = open(path, 'a+')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            lock.seek(0)
            pid = lock.read().strip() or 'unknown'
            lock.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(pid) from None
            log.warning('%s: cannot lock (%s): another vidseg command writing here at the same time is not '
                        'detected', path, e.strerror or e)
            return None
        if _same_file(lock, path):
            lock.seek(0)
            lock.truncate()
            lock.write(f'{os.getpid()}\n')
            lock.flush()
            return lock
        lock.close()    # its holder removed it between our open and our lock: lock the file there now
    raise LockHeld('unknown')


def _same_file(lock: IO[str], path: Path) -> bool:
    try:
        here, ours = os.stat(path), os.fstat(lock.fileno())
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino)


def first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            return missing
        missing = folder
    return missing


@contextlib.contextmanager
def dataset_lock(root: str | Path, create: bool = False, what: str = 'dataset'):
    """Hold ``<root>/.vidseg.lock`` while writing the dataset (or output folder) ``root``.

    A second writer gets ValueError '<root>: dataset in use by another vidseg command (PID N); wait for it to
    end' before it writes anything. Nested use in one thread shares the lock. On exit, a folder left holding
    nothing but the lock file loses it, and the folders this call created are removed again.

    Args:
        root: the folder.
        create: create ``root`` (and its parents) when missing; else it must hold an ``index.csv``.
        what: what ``root`` is, for the message ('dataset', 'output folder').
    """
    root = Path(root)
    created = first_missing(root) if create else None
    if create:
        root.mkdir(parents=True, exist_ok=True)
    elif not has_index(root):
        raise FileNotFoundError(f'no {INDEX_NAME} in {root}; create it with `vidseg extract`')
    key = (os.path.realpath(root / LOCK_NAME), threading.get_ident())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield root
        finally:
            held[1] -= 1
        return
    try:
        lock = lock_file(root / LOCK_NAME)
    except LockHeld as e:   # nothing removed: the folder may be the other writer's new one
        raise ValueError(f'{root}: {what} in use by another vidseg command (PID {e.pid}); wait for it to end') \
            from None
    with _HELD_GUARD:
        _HELD[key] = [lock, 1]
    try:
        yield root
    finally:
        with _HELD_GUARD:
            del _HELD[key]
        _leave(root, created, lock)


def _leave(root: Path, created: Path | None, lock: IO[str] | None) -> None:
    """Release the lock, its PID cleared (a finished writer's would mislead); a folder holding nothing else
    loses the lock file (still held, so a writer that opened it meanwhile sees it removed and takes the new
    one) and, when this call created it, itself."""
    try:
        if lock is not None:
            lock.truncate(0)
        if {p.name for p in root.iterdir()} == {LOCK_NAME}:
            (root / LOCK_NAME).unlink(missing_ok=True)
            for folder in [root, *root.parents]:
                if created is None or created not in [folder, *folder.parents]:
                    break
                folder.rmdir()      # only when empty
    except OSError:
        pass
    finally:
        if lock is not None:
            lock.close()
