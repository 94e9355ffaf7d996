"""``vidseg_ros.files`` on its own: a file written whole or not at all (a full disk, a file size limit, Ctrl-C
mid-write), synced before the rename, and what a path that is no file to read is called. Fast, in-process;
the CLI side of the same is test_special_files.py."""
import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vidseg_ros import files
from vidseg_ros.files import (NotAFileError, check_replaceable, file_problem, name_limit, open_regular,
                              read_regular_text, temp_path, write_file_atomic)

ROOT = Path(__file__).resolve().parents[2]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'card.md'
    path.write_bytes(b'old')
    assert write_file_atomic(path, b'new text') == path
    assert path.read_bytes() == b'new text' and _names(tmp_path) == ['card.md']
    assert write_file_atomic(tmp_path / 'view.bin', memoryview(b'\x00\x01')).read_bytes() == b'\x00\x01'


@pytest.mark.parametrize('fsync', [True, False])
def test_the_data_is_synced_before_the_rename_unless_it_can_be_made_again(tmp_path, monkeypatch, fsync):
    """A power cut after a rename of unsynced data leaves an empty file under the new name (ext4, XFS); one before
    the folder holding the rename is synced may bring back the old file. Both are synced, in that order."""
    import stat
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def recorded(fd):
        st = os.fstat(fd)
        events.append(('fsync', 'folder' if stat.S_ISDIR(st.st_mode) and st.st_ino == tmp_path.stat().st_ino
                       else st.st_size))
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', recorded)
    monkeypatch.setattr(os, 'replace', lambda *a: (events.append(('replace',)), real_replace(*a)))
    write_file_atomic(tmp_path / 'x', b'12345', fsync=fsync)
    assert events == ([('fsync', 5), ('replace',), ('fsync', 'folder')] if fsync else [('replace',)])


def test_a_folder_that_cannot_be_synced_is_no_error_of_the_write(tmp_path, monkeypatch):
    """The file is in place once renamed: a folder fsync refused (EINVAL on some FUSE and NFS mounts) does not
    turn a write that happened into 'not written'."""
    import stat
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, 'Invalid argument')
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    fds = _open_fds()
    assert write_file_atomic(tmp_path / 'x', b'data').read_bytes() == b'data'
    assert _open_fds() == fds


def test_a_link_is_written_through_not_replaced(tmp_path):
    """Renamed over, a link became a file: a config kept in a dotfiles folder through a link went out of it, and
    a shared card linked into several places stopped being shared. Written through, as `cp` and `>` do; the temp
    goes beside the file linked to (the same file system, so the rename stays atomic)."""
    real = tmp_path / 'dotfiles' / 'run.yaml'
    real.parent.mkdir()
    real.write_text('old')
    (tmp_path / 'work').mkdir()
    link = tmp_path / 'work' / 'run.yaml'
    link.symlink_to(real)
    write_file_atomic(link, b'new')
    assert link.is_symlink() and real.read_bytes() == b'new'
    assert _names(real.parent) == ['run.yaml'] and _names(link.parent) == ['run.yaml']
    dangling = tmp_path / 'work' / 'card.md'
    dangling.symlink_to(tmp_path / 'dotfiles' / 'card.md')      # made on its first write, as `>` does
    write_file_atomic(dangling, b'card')
    assert dangling.is_symlink() and dangling.read_bytes() == b'card'


@pytest.mark.parametrize('failing', ['fsync', 'replace'])
def test_a_full_disk_keeps_the_old_file_and_names_the_file_asked_for(tmp_path, monkeypatch, failing):
    """ENOSPC from fsync (NFS, delayed allocation: write() took the data) or from the rename: the old file is
    kept, the temporary removed, and the error names the file the user gave, not ``.1a2b3c4d.tmp``."""
    path = tmp_path / 'index.csv'
    path.write_bytes(b'old rows')

    def full(*args):
        raise OSError(errno.ENOSPC, 'No space left on device', str(temp_path(path)))
    monkeypatch.setattr(os, failing, full)
    with pytest.raises(OSError) as e:
        write_file_atomic(path, b'new rows' * 1000, shown='dataset/index.csv')
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, 'dataset/index.csv')
    assert e.value.strerror == 'No space left on device (not written; a file there before is unchanged)'
    assert path.read_bytes() == b'old rows' and _names(tmp_path) == ['index.csv']


def test_a_file_size_limit_hit_mid_write_keeps_the_old_file(tmp_path):
    """A real short write: the kernel refuses past RLIMIT_FSIZE (EFBIG, SIGXFSZ ignored as a shell's ulimit -f
    does not), as a full disk refuses past its last block."""
    path = tmp_path / 'model.onnx'
    path.write_bytes(b'old graph')

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    code = ('import sys; from vidseg_ros.files import write_file_atomic\n'
            'try:\n    write_file_atomic(sys.argv[1], bytes(1 << 20))\n'
            'except OSError as e:\n    print(e.errno, e.filename, e.strerror)')
    p = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True, timeout=60,
                       preexec_fn=limited, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert p.stdout == f'{errno.EFBIG} {path} File too large (not written; a file there before is unchanged)\n', \
        (p.stdout, p.stderr[-2000:])
    assert path.read_bytes() == b'old graph' and _names(tmp_path) == ['model.onnx']


def test_ctrl_c_mid_write_removes_the_temporary_and_stays_an_interruption(tmp_path, monkeypatch):
    path = tmp_path / 'x'

    def interrupted(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, 'fsync', interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(path, b'data')
    assert _names(tmp_path) == []


@pytest.mark.parametrize('where', ['flock', 'ftruncate', 'dup'])
def test_ctrl_c_while_the_temporary_is_being_taken_removes_it(tmp_path, monkeypatch, where):
    """A SIGTERM on `vidseg extract` landed after the temp was made and before the write's cleanup took it on
    (in CI): a hidden ``.<hex>.tmp`` was left among the frames. An interruption anywhere leaves none."""
    import fcntl
    path = tmp_path / 'x'
    path.write_bytes(b'old')
    real = {'flock': fcntl.flock, 'ftruncate': os.ftruncate, 'dup': os.dup}[where]

    def interrupted(fd, *args):
        if args and args[0] & fcntl.LOCK_NB:        # the cleanup's own look at the lock
            return real(fd, *args)
        raise KeyboardInterrupt
    monkeypatch.setattr(fcntl if where == 'flock' else os, where, interrupted)
    fds = _open_fds()
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(path, b'new')
    assert _names(tmp_path) == ['x'] and path.read_bytes() == b'old' and _open_fds() == fds


def test_ctrl_c_as_the_temporary_s_open_returns_removes_it(tmp_path, monkeypatch):
    """A signal's handler runs as a call returns, before its result is kept: the temp os.open had just made was
    known to nobody, and a SIGTERM on `vidseg label-import` left it among the labels (CI)."""
    path = tmp_path / 'x'
    real_open = os.open

    def opened_then_interrupted(name, flags, *args):
        fd = real_open(name, flags, *args)
        if Path(name) == temp_path(path) and flags & os.O_CREAT:
            os.close(fd)                   # lost to the caller, as with the real signal (closed: no leak here)
            raise KeyboardInterrupt
        return fd
    monkeypatch.setattr(os, 'open', opened_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(path, b'new')
    assert _names(tmp_path) == []


def test_ctrl_c_as_the_locked_temporary_is_handed_over_removes_it(tmp_path, monkeypatch):
    """The same as the locked descriptor is returned: the lock is held by a descriptor the caller never got, so
    the temp looked like another writer's and was left. The caller gets it before the return."""
    path = tmp_path / 'x'
    real = files._locked_temp

    def handed_over_then_interrupted(tmp, held):
        real(tmp, held)
        raise KeyboardInterrupt
    monkeypatch.setattr(files, '_locked_temp', handed_over_then_interrupted)
    fds = _open_fds()
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(path, b'new')
    assert _names(tmp_path) == [] and _open_fds() == fds


def test_ctrl_c_while_waiting_for_another_writer_leaves_its_temporary(tmp_path, monkeypatch):
    """The temp another writer holds is its own: interrupted while waiting for it, this one does not remove it."""
    import fcntl
    path = tmp_path / 'x'
    other = os.open(temp_path(path), os.O_WRONLY | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    real = fcntl.flock

    def flock(fd, op):
        if op & fcntl.LOCK_NB:
            return real(fd, op)
        raise KeyboardInterrupt         # while blocked on the other writer's lock
    monkeypatch.setattr(fcntl, 'flock', flock)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_file_atomic(path, b'new')
        assert _names(tmp_path) == [temp_path(path).name]
    finally:
        os.close(other)


def test_an_error_without_a_reason_is_raised_as_it_came(tmp_path, monkeypatch):
    def odd(*args):
        raise OSError('odd')
    monkeypatch.setattr(os, 'replace', odd)
    with pytest.raises(OSError) as e:
        write_file_atomic(tmp_path / 'x', b'data')
    assert e.value.args == ('odd',) and _names(tmp_path) == []


def test_the_temporary_name_is_short_fixed_and_the_files_own(tmp_path):
    """``<name>.tmp`` overran the 255 bytes of a long name; a fixed name is reused after a killed writer."""
    long = tmp_path / ('n' * 255)
    assert temp_path(long) == temp_path(long) and temp_path(long).parent == tmp_path
    assert len(temp_path(long).name) == len('.12345678.tmp') and temp_path(long).name.startswith('.')
    assert temp_path(tmp_path / 'a') != temp_path(tmp_path / 'b')
    write_file_atomic(long, b'x')
    assert long.read_bytes() == b'x'


def test_a_folder_or_a_link_to_one_is_not_replaced(tmp_path):
    (tmp_path / 'dir').mkdir()
    (tmp_path / 'link').symlink_to(tmp_path / 'dir')
    for name in ('dir', 'link'):
        with pytest.raises(NotAFileError, match='is a folder: not replaced by a file') as e:
            write_file_atomic(tmp_path / name, b'x', shown=f'shown/{name}')
        assert e.value.filename == f'shown/{name}'      # the file the user named, not where it was staged
    assert (tmp_path / 'dir').is_dir() and _names(tmp_path / 'dir') == []
    (tmp_path / 'dangling').symlink_to(tmp_path / 'missing')
    check_replaceable(tmp_path / 'dangling')        # the write itself says what is wrong there
    check_replaceable(tmp_path / 'missing')


@pytest.mark.parametrize('make,says', [
    (lambda p: None, 'is missing'),
    (lambda p: p.mkdir(), 'is a folder'),
    (lambda p: os.mkfifo(p), 'is not a regular file (a FIFO, a device...)'),
    (lambda p: p.symlink_to(p.with_name('nothing')), 'is a link to nothing, or one that loops'),
    (lambda p: p.symlink_to(p), 'is a link to nothing, or one that loops'),
    (lambda p: p.write_bytes(b''), ''),
    (lambda p: (p.with_name('real').write_bytes(b'x'), p.symlink_to(p.with_name('real'))), '')])
def test_what_a_path_that_is_no_file_is_called(tmp_path, make, says):
    path = tmp_path / 'f'
    make(path)
    assert file_problem(path) == says


def test_a_path_through_a_file_or_with_a_nul_is_missing_and_one_too_long_is_an_error(tmp_path):
    (tmp_path / 'file').write_bytes(b'')
    assert file_problem(tmp_path / 'file' / 'x') == 'is missing'
    assert file_problem(str(tmp_path / 'a\0b')) == 'is missing'
    with pytest.raises(OSError) as e:
        file_problem(tmp_path / ('n' * 300))
    assert e.value.errno == errno.ENAMETOOLONG


def test_open_regular_reads_only_and_leaves_the_file_blocking(tmp_path):
    path = tmp_path / 'a.txt'
    path.write_bytes(b'one\r\ntwo\n')
    for mode in ('w', 'ab', 'x', 'r+'):
        with pytest.raises(ValueError, match='open_regular reads'):
            open_regular(path, mode)
    with open_regular(path) as f:
        assert os.get_blocking(f.fileno()) and f.read() == b'one\r\ntwo\n'
    assert read_regular_text(path) == 'one\ntwo\n'
    assert read_regular_text(path, newline='') == 'one\r\ntwo\n'
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / 'missing')


def test_name_limit_is_that_of_the_nearest_existing_folder(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(os, 'pathconf', lambda folder, name: (asked.append((Path(folder), name)), 143)[1])
    assert name_limit(tmp_path / 'new' / 'deeper' / 'file') == 143
    assert asked == [(tmp_path, 'PC_NAME_MAX')]

    def unsupported(folder, name):
        raise OSError(errno.EINVAL, 'Invalid argument')
    monkeypatch.setattr(os, 'pathconf', unsupported)
    assert name_limit(tmp_path / 'x') == 255


def test_real_path_of_a_link_loop_is_no_error(tmp_path):
    (tmp_path / 'loop').symlink_to(tmp_path / 'loop')
    assert files.real_path(tmp_path / 'loop' / 'x').name == 'x'


def _open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def test_no_descriptor_is_left_open_by_a_refusal_or_a_non_utf8_folder(tmp_path):
    """A FIFO refused, or a model opened through a folder whose name is not UTF-8, kept a descriptor each time:
    a node retrying a load every few seconds ran out of descriptors."""
    if not os.path.isdir('/proc/self/fd'):
        pytest.skip('no /proc/self/fd')
    os.mkfifo(tmp_path / 'fifo')
    latin1 = tmp_path / os.fsdecode(b'caf\xe9')
    try:
        latin1.mkdir()
    except (OSError, UnicodeEncodeError):
        latin1 = None
    before = _open_fds()
    for _ in range(20):
        with pytest.raises(NotAFileError):
            open_regular(tmp_path / 'fifo')
        if latin1 is not None:
            with files.text_path(latin1 / 'm.onnx') as text:
                assert text.startswith('/proc/self/fd/')
    assert _open_fds() == before


def test_two_writers_of_one_file_at_once_each_write_it_whole(tmp_path, monkeypatch):
    """They share the temp name: the second truncated the first's temp while the first synced it and renamed it
    over the file itself, the first's rename then failed ('No such file or directory (not written; ...)') and the
    file read half one write, half the other (two `vidseg eval --card` of one model at once). The second now
    waits for the first's rename."""
    import threading
    path = tmp_path / 'card.md'
    first, second = b'1' * 100_000, b'2' * 50_000
    in_fsync, go, errors, seen = threading.Event(), threading.Event(), [], []
    real_fsync = os.fsync

    def fsync(fd):
        if threading.current_thread().name == 'first' and not in_fsync.is_set():
            in_fsync.set()
            go.wait(60)
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)

    def write(data):
        try:
            write_file_atomic(path, data)
            seen.append(path.read_bytes())
        except OSError as e:
            errors.append(e)
    fds = _open_fds()
    a = threading.Thread(target=write, args=(first,), name='first')
    a.start()
    assert in_fsync.wait(60)
    b = threading.Thread(target=write, args=(second,), name='second')
    b.start()
    b.join(2)           # the old code's second writer was done by now; this one waits for the first
    go.set()
    a.join(60)
    b.join(60)
    assert errors == [] and path.read_bytes() == second and all(s in (first, second) for s in seen)
    assert _names(tmp_path) == ['card.md'] and _open_fds() == fds


@pytest.mark.parametrize('data', [b'ab', b''])
def test_a_temporary_a_killed_writer_left_is_reused_emptied(tmp_path, data):
    path = tmp_path / 'index.csv'
    temp_path(path).write_bytes(b'x' * 100)      # left by a writer killed mid-write
    write_file_atomic(path, data)
    assert path.read_bytes() == data and _names(tmp_path) == ['index.csv']


def test_the_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    assert write_file_atomic(tmp_path / 'x', b'').stat().st_mode & 0o777 == 0o666 & ~umask


def test_where_the_file_system_has_no_flock_the_file_is_written_and_a_lock_error_is_one(tmp_path, monkeypatch):
    """Some network and FUSE file systems refuse flock (EOPNOTSUPP, ENOLCK): written as before, unlocked. Any
    other error of the lock is the write's error, naming the file; no descriptor is kept."""
    import fcntl
    fds = _open_fds()
    for code in (errno.EOPNOTSUPP, errno.ENOLCK, errno.EIO):
        def flock(fd, op, code=code):
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(fcntl, 'flock', flock)
        path = tmp_path / f'{code}.md'
        if code == errno.EIO:
            with pytest.raises(OSError) as e:
                write_file_atomic(path, b'card')
            assert (e.value.errno, e.value.filename) == (errno.EIO, str(path))
        else:
            assert write_file_atomic(path, b'card').read_bytes() == b'card'
    assert _open_fds() == fds
