"""Real sample video from a package registry: Debian's ``opencv-doc`` clips, cached once per machine.

The demo plays it when no video is given, and tests that need real frames (JPEG round trips, optical
flow, a tutorial "drive") use it when ``../shared/data`` is absent, so a fresh clone tests on real
pixels. ``apt-get download`` + ``dpkg-deb`` need no root; only the ``examples/data`` folder of the
package is unpacked. No ROS, no torch.
"""
from __future__ import annotations

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
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        # unpacked inside the cache: the clips are renamed into place (a concurrent or interrupted fetch never
        # leaves a half-written one), and a rename out of a tmpfs /tmp (Debian 13, Fedora) failed with EXDEV
        unpacked = Path(tempfile.mkdtemp(prefix='.unpacking_', dir=root))
    except OSError as e:
        raise SampleVideoError(f'cannot write the sample cache {root} ({e.strerror or e}); set VIDSEG_CACHE=DIR '
                               'or VIDSEG_SAMPLE_VIDEO=PATH to any video') from e
    try:
        with tempfile.TemporaryDirectory(prefix='vidseg_opencv_doc_') as tmp:
            subprocess.run(['apt-get', 'download', 'opencv-doc'], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
            deb = next(Path(tmp).glob('opencv-doc_*.deb'), None)
            if deb is None:
                raise OSError('apt-get download left no opencv-doc_*.deb')
            _unpack(deb, unpacked)
        for src in (unpacked / DATA_DIR).iterdir():
            dst = root / DATA_DIR / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.replace(src, dst)
    except (OSError, subprocess.SubprocessError, tarfile.TarError) as e:
        raise SampleVideoError(f'could not obtain {name} from Debian\'s opencv-doc package ({_why(e)}); '
                               'set VIDSEG_SAMPLE_VIDEO=PATH to any video instead') from e
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    if not target.is_file():
        raise SampleVideoError(f'opencv-doc has no {DATA_DIR}/{name}')
    return target


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
