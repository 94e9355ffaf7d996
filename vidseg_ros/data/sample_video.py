"""Real sample video from a package registry: Debian's ``opencv-doc`` clips, cached once per machine.

The demo plays it when no video is given, and tests that need real frames (JPEG round trips, optical
flow, a tutorial "drive") use it when ``../shared/data`` is absent, so a fresh clone tests on real
pixels. ``apt-get download`` + ``dpkg-deb`` need no root; only the ``examples/data`` folder of the
package is unpacked. No ROS, no torch.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.files import cv_path
from vidseg_ros.text import one_line

CACHE = Path(os.environ.get('VIDSEG_CACHE', Path.home() / '.cache' / 'vidseg_ros'))
DATA_DIR = 'usr/share/doc/opencv-doc/examples/data'
OPENCV_SAMPLE = f'{DATA_DIR}/vtest.avi'   # 768x576 pedestrians, 795 frames at 10 fps


class SampleVideoError(RuntimeError):
    """The sample clip could not be fetched (no apt-get, no network, not Debian-like)."""


def fetch_opencv_sample(name: str = 'vtest.avi') -> Path:
    """Path of ``name`` from opencv-doc's examples/data, downloading and unpacking it once.

    ``VIDSEG_SAMPLE_VIDEO`` overrides the path (any video file) for machines without apt.
    """
    if os.environ.get('VIDSEG_SAMPLE_VIDEO') and name == 'vtest.avi':
        return Path(os.environ['VIDSEG_SAMPLE_VIDEO'])
    root = CACHE / 'opencv-doc'
    target = root / DATA_DIR / name
    if target.is_file():
        with contextlib.suppress(OSError):
            _remove_stale(root)
        return target
    with _staging(root) as staging:
        try:
            download = staging / 'deb'
            download.mkdir()
            subprocess.run(['apt-get', 'download', 'opencv-doc'], cwd=download, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
            deb = next(download.glob('opencv-doc_*.deb'), None)
            if deb is None:
                raise OSError('apt-get download left no opencv-doc_*.deb')
            _unpack(deb, staging / 'tree')
            for src in (staging / 'tree' / DATA_DIR).iterdir():
                dst = root / DATA_DIR / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    os.replace(src, dst)
        except (OSError, subprocess.SubprocessError, tarfile.TarError) as e:
            raise SampleVideoError(f'could not obtain {name} from Debian\'s opencv-doc package ({_why(e)}); '
                                   'set VIDSEG_SAMPLE_VIDEO=PATH to any video instead') from e
    if not target.is_file():
        raise SampleVideoError(f'opencv-doc has no {DATA_DIR}/{name}')
    return target


# A fetch downloads and unpacks in a folder of its own in the cache, root/.unpacking-XXXXXXXX (22 MB unpacked,
# the .deb more): the clip is renamed from there into place, never half-written (a rename out of a tmpfs /tmp
# failed with EXDEV, and a .deb downloaded to /tmp stayed there after a SIGKILL). The folder is made and used
# only while the fetch holds a shared flock on the folder ``root`` itself; a SIGKILL leaves the folder (it was
# left for ever) but releases the lock. A fetch that gets the lock exclusive (no other fetch is staging now:
# pytest-xdist workers may be) removes the staging folders, whose owners are then provably gone. ('-': old
# versions named theirs .unpacking_XXXXXXXX, with no lock, so a fetch of one of them running now cannot be told
# from a dead one.) Where the file system has no flock, nothing is removed.
STAGING_PREFIX = '.unpacking-'


def _lock(root: Path) -> int:
    return os.open(root, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0))


def _try_exclusive(fd: int) -> bool:
    """Whether this process now holds ``fd``'s flock exclusive (False: another holds it, or no flock here)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:         # BlockingIOError: another fetch is staging (shared) or cleaning (for a moment)
        return False
    return True


@contextlib.contextmanager
def _staging(root: Path):
    """A staging folder of this fetch in ``root`` (removed after), made and used under a shared lock; the folders
    of killed fetches removed first when no other fetch is staging."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = _lock(root)
    except OSError as e:
        raise _unwritable(root, e) from e
    try:
        if _try_exclusive(fd):
            _remove_staging(root)
        # waits out a cleaner; the folder is made after this, so no cleaner can take it for a dead fetch's
        with contextlib.suppress(OSError):      # no flock on this file system: no exclusive lock either
            fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
        except OSError as e:
            raise _unwritable(root, e) from e
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(fd)


def _unwritable(root: Path, e: OSError) -> SampleVideoError:
    return SampleVideoError(f'cannot write the sample cache {root} ({e.strerror or e}); set VIDSEG_CACHE=DIR or '
                            'VIDSEG_SAMPLE_VIDEO=PATH to any video')


def _remove_stale(root: Path) -> None:
    """The staging folders of fetches that were killed, removed when no fetch is staging now (best effort)."""
    if not any(p.name.startswith(STAGING_PREFIX) for p in root.iterdir()):
        return      # the usual case
    fd = _lock(root)
    try:
        if _try_exclusive(fd):
            _remove_staging(root)
    finally:
        os.close(fd)


def _remove_staging(root: Path) -> None:
    """Every staging folder in ``root``: call with the exclusive lock held."""
    for path in root.iterdir():
        if path.name.startswith(STAGING_PREFIX) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _why(error: BaseException) -> str:
    """One line: apt-get's own error (its last ``E:`` line), not its whole stderr with the warnings before it."""
    lines = (getattr(error, 'stderr', None) or b'').decode(errors='replace').splitlines()
    apt = [line for line in lines if line.startswith('E:')] or [line for line in lines if line.strip()][-1:]
    if isinstance(error, subprocess.CalledProcessError):
        what = f'{" ".join(error.cmd)} exited {error.returncode}'
    else:
        what = f'{type(error).__name__}: {error}'
    return one_line(f'{what}: {apt[-1]}' if apt else what, 300)


def _unpack(deb: Path, out: Path) -> None:
    """Only the examples/data members of the package's file tree (the docs are ~90 MB more)."""
    with subprocess.Popen(['dpkg-deb', '--fsys-tarfile', str(deb)], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode='r|') as tar:
            for member in tar:
                if member.name.lstrip('./').startswith(DATA_DIR + '/') and member.isfile():
                    tar.extract(member, out, filter='data')
        proc.stdout.read()   # drain so dpkg-deb exits cleanly
    if proc.returncode:
        raise OSError(f'dpkg-deb --fsys-tarfile {deb.name} exited {proc.returncode}')


def read_frames(path: str | Path, count: int, every: int = 1, start: int = 0,
                size_hw: tuple[int, int] | None = None) -> list[np.ndarray]:
    """``count`` RGB frames (uint8) of a video: frames start, start+every, ...; resized to ``size_hw``."""
    cap = cv2.VideoCapture(cv_path(path))
    if not cap.isOpened():
        raise SampleVideoError(f'OpenCV cannot open {path}')
    frames, i = [], 0
    try:
        while len(frames) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            if i >= start and (i - start) % every == 0:
                if size_hw:
                    bgr = cv2.resize(bgr, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    if len(frames) < count:
        raise SampleVideoError(f'{path}: only {len(frames)} of {count} frames readable')
    return frames
