"""Files written whole or not at all. Imports nothing of the package, so every layer (checkpoints, dataset
images and indexes, exports, cards) writes through the same three functions."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


def temp_path(path: str | Path) -> Path:
    """The hidden name beside ``path`` to write before the rename: ``.<8 hex digits of its name>.tmp``, short so
    that any name the file system takes has a temp name it takes too (``<name>.tmp`` overran 255 bytes),
    fixed so that a temp a killed writer left is reused, not piled up."""
    path = Path(path)
    digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:8]
    return path.with_name(f'.{digest}.tmp')


def write_file_atomic(path: str | Path, data: bytes | memoryview, shown: str | Path | None = None,
                      fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` whole or not at all: into ``temp_path(path)``, synced, then renamed over ``path``.

    On any error (a full disk, a file size limit, Ctrl-C) the temp is removed and ``path`` keeps what it held;
    an OSError is raised again naming ``shown`` (default ``path``), the file the user asked for, not the temp.
    Python's writes raise on a full disk, where ``cv2.imwrite`` and ``torch.save`` to a path did not (or aborted).
    ``fsync=False`` only for files that can be made again (extracted frames): a power cut may leave them empty.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.strerror:
            raise OSError(e.errno, f'{e.strerror} (not written; a file there before is unchanged)',
                          str(shown or path)) from e
        raise
    return path


def name_limit(path: str | Path) -> int:
    """The longest file name, in bytes, the file system takes in ``path``'s folder (its nearest existing
    folder's ``PC_NAME_MAX``; 255 where it does not say)."""
    folder = next((p for p in Path(path).absolute().parents if p.is_dir()), Path('/'))
    try:
        return os.pathconf(folder, 'PC_NAME_MAX')
    except (OSError, ValueError):
        return 255
