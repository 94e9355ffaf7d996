"""Files written whole or not at all, and read only when they are files. Imports nothing of the package, so every
layer (checkpoints, dataset images and indexes, exports, cards, configs, bag metadata) writes and reads through
the same few functions."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from pathlib import Path


class NotAFileError(OSError):
    """A path that is there but is no regular file where a file is read or replaced (a FIFO, a device, a socket,
    a folder). An OSError naming the path, so the CLI's one line is '<path>: is a FIFO ..., not a file'."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(errno.EINVAL, problem, str(path))


def file_problem(path: str | Path) -> str:
    """Why ``path`` is no file to read, as the end of 'file X ...': 'is missing', 'is a folder', 'is a link
    to nothing, or one that loops', 'is not a regular file (a FIFO, a device...)'; '' for a regular file (or a
    link to one). Nothing is opened: opening a FIFO blocks until someone writes, /dev/zero never ends.

    Raises the OSError of a path that cannot be looked at (a folder on the way this process may not enter: its
    'Permission denied', a name longer than the file system takes): it names the path and the reason."""
    try:
        mode = os.stat(path).st_mode
    except ValueError:      # a NUL byte: no file can have that name
        return 'is missing'
    except OSError as e:
        if e.errno == errno.ELOOP:
            return 'is a link to nothing, or one that loops'
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
        try:
            os.lstat(path)
        except OSError:
            return 'is missing'
        return 'is a link to nothing, or one that loops'
    return _mode_problem(mode)


def _mode_problem(mode: int) -> str:
    if stat.S_ISREG(mode):
        return ''
    return 'is a folder' if stat.S_ISDIR(mode) else 'is not a regular file (a FIFO, a device...)'


def open_regular(path: str | Path, mode: str = 'rb', **kwargs):
    """``open(path, mode, **kwargs)`` for reading, refused (NotAFileError) unless ``path`` is a regular file.

    Opened without blocking and checked on the open file (no gap for a FIFO to be swapped in): a plain
    ``open()`` of a FIFO waited for a writer forever, unkillable by SIGTERM, and /dev/zero read without end
    (a config or class table of /dev/zero took 6-23 GB in seconds). A missing file raises as ``open`` does."""
    if any(c in mode for c in 'wax+'):
        raise ValueError(f'open_regular reads; got mode {mode!r}')
    return open(path, mode, opener=_regular_fd, **kwargs)


def _regular_fd(path, flags: int) -> int:
    """``open()``'s opener: the descriptor is ours until this returns, then ``open()``'s, which closes it on any
    later error. (Closed here too after open() had it, a SIGTERM landing there closed it twice: EBADF replaced the
    interruption, and a second close can hit a number already reused by another file.)"""
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    try:
        if problem := _mode_problem(os.fstat(fd).st_mode):
            raise NotAFileError(path, problem)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def cv_path(path: str | Path) -> bytes:
    """``path`` as OpenCV must be given it: the file system's bytes. A name that is not UTF-8 (a Latin-1 file from
    an old disk or share: Python holds its byte as a lone surrogate) given as text crashed the process in OpenCV's
    bindings (SIGSEGV in cv2.imread, imwrite, VideoCapture and VideoWriter alike); as bytes it opens."""
    return os.fsencode(path)


@contextlib.contextmanager
def text_path(path: str | Path):
    """``path`` as text a native library that takes only UTF-8 text can open (onnxruntime, torch.jit.load: a name
    that is not UTF-8 was a TypeError there, "incompatible function arguments"): the path itself when it is UTF-8,
    else, on Linux, its file through the open folder (``/proc/self/fd/N/name``; a model's external data, which
    onnxruntime looks for beside it, is found there too). OSError where the file's own name is not UTF-8."""
    text = os.fspath(path)
    if _is_utf8(text):
        yield text
        return
    folder, name = os.path.split(text)
    if not _is_utf8(name):
        raise OSError(errno.EILSEQ, 'a name that is not UTF-8 text; rename the file', text)
    fd = os.open(folder or '.', os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0))
    try:
        if not os.path.isdir(f'/proc/self/fd/{fd}'):
            raise OSError(errno.EILSEQ, 'a folder name that is not UTF-8 text; rename it', text)
        yield f'/proc/self/fd/{fd}/{name}'
    finally:
        os.close(fd)


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def real_path(path: str | Path) -> Path:
    """``path`` with its links followed, as far as they go: ``Path.resolve()`` raised RuntimeError ('Symlink
    loop from ...') at a link loop, an internal error where the user had given a bad path; what is left of a
    loop is then used as it is, and the open or mkdir after it says what is wrong."""
    return Path(os.path.realpath(path))


def read_regular_text(path: str | Path, encoding: str | None = None, errors: str | None = None,
                      newline: str | None = None) -> str:
    """``Path(path).read_text()`` of a regular file only (``open_regular``); ``newline=''`` keeps its line endings."""
    with open_regular(path, 'r', encoding=encoding, errors=errors, newline=newline) as f:
        return f.read()


def temp_path(path: str | Path) -> Path:
    """The hidden name beside ``path`` to write before the rename: ``.<8 hex digits of its name>.tmp``, short so
    that any name the file system takes has a temp name it takes too (``<name>.tmp`` overran 255 bytes),
    fixed so that a temp a killed writer left is reused, not piled up."""
    path = Path(path)
    digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:8]
    return path.with_name(f'.{digest}.tmp')


def write_file_atomic(path: str | Path, data: bytes | memoryview, shown: str | Path | None = None,
                      fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` whole or not at all: into ``temp_path(path)``, synced, then renamed over ``path``
    (over the file it links to, for a link), and its folder synced.

    On any error (a full disk, a file size limit, Ctrl-C) the temp is removed and ``path`` keeps what it held;
    an OSError is raised again naming ``shown`` (default ``path``), the file the user asked for, not the temp.
    Python's writes raise on a full disk, where ``cv2.imwrite`` and ``torch.save`` to a path did not (or aborted).
    ``fsync=False`` only for files that can be made again (extracted frames): a power cut may leave them empty.
    """
    path = Path(path)
    check_replaceable(path, shown)
    # a link is written through, as `cp` and a shell's `>` do (and torch.save did): renamed over, the link was
    # replaced by a file, and a config kept in a dotfiles folder through a link went out of it
    target = real_path(path) if path.is_symlink() else path
    tmp = temp_path(target)
    held: list[int] = []    # filled inside _locked_temp: a signal landing as it returns would lose a returned fd
    try:
        lock = _locked_temp(tmp, held)
        # written through a second descriptor, closed before the rename (NFS reports a failed write on close);
        # ``lock`` keeps the temp locked until it is renamed or removed
        with os.fdopen(os.dup(lock), 'wb') as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
        if fsync:
            _sync_folder(target.parent)
    except BaseException as e:
        if held:
            _drop_temp(held[0], tmp)
        else:       # interrupted before the descriptor was kept: right as os.open returned (CI, a SIGTERM)
            _drop_unheld_temp(tmp)
        if isinstance(e, OSError) and e.strerror:
            raise OSError(e.errno, f'{e.strerror} (not written; a file there before is unchanged)',
                          str(shown or path)) from e
        raise
    finally:
        if held:
            os.close(held[0])
    return path


def _sync_folder(folder: Path) -> None:
    """fsync ``folder``, so the rename in it survives a power cut (ext4 and XFS may otherwise come back with the old
    file, or none, under the name). Best effort: the file is in place by now, so a folder the file system cannot
    sync (EINVAL on some FUSE and NFS mounts) or cannot open is no error of the write."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _locked_temp(tmp: Path, held: list[int]) -> int:
    """A descriptor of ``tmp``, empty, holding its exclusive flock (until it is closed, after the rename); also
    appended to ``held``, so the caller has it even when a signal's handler raises as this returns.

    Two writers of one file share its temp name: the second truncated the first's temp mid-write, the first then
    renamed it (the file read half one write, half the other) and the second failed 'No such file or directory
    (not written ...)' - two `vidseg eval --card` of one model at once. Now the second waits; the temp it then
    holds may have been renamed meanwhile (it is the file now): it opens the name again. A temp a killed writer
    left is locked by no one and reused. Where the file system has no flock, as before (unlocked).

    Interrupted here (a SIGTERM on `vidseg extract` landed between the open and the lock, in CI), the temp it
    made is removed (``_drop_temp``): it was left behind, a hidden ``.<hex>.tmp`` among the frames."""
    while True:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o666)
        try:
            if _holds(fd, tmp):
                os.ftruncate(fd, 0)
                held.append(fd)
                return fd
        except BaseException:
            _drop_temp(fd, tmp)
            os.close(fd)
            raise
        os.close(fd)


def _drop_temp(fd: int, tmp: Path) -> None:
    """Remove ``tmp`` if it is still the file ``fd`` is open on and no other writer holds its lock: a write that
    failed or was interrupted leaves no temp. Left alone: a temp another writer holds (this one was waiting for
    it), and the name once renamed (a waiting writer may have made a new temp there already)."""
    with contextlib.suppress(OSError):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)      # already ours, or taken now: nobody else's
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return
        now, held = os.stat(tmp), os.fstat(fd)
        if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            os.unlink(tmp)


def _holds(fd: int, tmp: Path) -> bool:
    """Whether ``fd``, once its exclusive flock is got, is the file named ``tmp`` still (True where the file
    system has no flock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL, errno.ENOSYS):
            return True
        raise
    try:
        now = os.stat(tmp)
    except FileNotFoundError:       # renamed by the writer this one waited for
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _drop_unheld_temp(tmp: Path) -> None:
    """Remove ``tmp`` if nobody holds its lock: left by this writer, interrupted right after ``os.open`` made it and
    before the descriptor was kept (a signal's handler runs as the call returns), or by a killed writer. A writer
    that made it and has not locked it yet finds it gone once locked (``_holds``) and makes it again."""
    with contextlib.suppress(OSError):
        fd = os.open(tmp, os.O_WRONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
        try:
            _drop_temp(fd, tmp)
        finally:
            os.close(fd)


def check_replaceable(path: str | Path, shown: str | Path | None = None) -> None:
    """Refuse (NotAFileError) to rename a file over a FIFO, a device, a socket or a folder at ``path`` (or
    where a link there points): run as root, a card written to a link to /dev/full replaced the device
    itself with a regular file, and /dev/null too - for every process on the machine."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):       # missing, a dangling link, a loop: the write itself says what is wrong
        return
    if problem := _mode_problem(mode):
        raise NotAFileError(shown or path, f'{problem}: not replaced by a file (nothing written)')


def name_limit(path: str | Path) -> int:
    """The longest file name, in bytes, the file system takes in ``path``'s folder (its nearest existing
    folder's ``PC_NAME_MAX``; 255 where it does not say)."""
    folder = next((p for p in Path(path).absolute().parents if p.is_dir()), Path('/'))
    try:
        return os.pathconf(folder, 'PC_NAME_MAX')
    except (OSError, ValueError):
        return 255
