"""Fetching the sample clip on a fresh clone (no ../shared, nothing cached).

The package is a real .deb built here with dpkg-deb and unpacked by the real code; only apt-get's download is
stood in for by a script on PATH that copies it (no network in CI). The no-network case runs the real apt-get
in a network namespace of its own (root only; skipped otherwise)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.videos import mjpg_avi

DATA_DIR = 'usr/share/doc/opencv-doc/examples/data'

FETCH = r'''
from vidseg_ros.data.sample_video import SampleVideoError, fetch_opencv_sample, read_frames
try:
    path = fetch_opencv_sample()
    print(path, len(read_frames(path, 4)))
except SampleVideoError as e:
    print('error:', e)
'''


def fetch(tmp_path, path_dirs=(), **env):
    env = {**os.environ, 'VIDSEG_CACHE': str(tmp_path / 'cache'), **env}
    env.pop('VIDSEG_SAMPLE_VIDEO', None)
    env['PATH'] = os.pathsep.join([*map(str, path_dirs), env['PATH']])
    proc = subprocess.run([sys.executable, '-c', FETCH], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def package(tmp_path, truncate: bool = False):
    """A directory holding an ``apt-get`` that 'downloads' a real opencv-doc .deb holding a 4-frame clip."""
    if not shutil.which('dpkg-deb'):
        pytest.skip('dpkg-deb is not installed')
    tree = tmp_path / 'tree'
    (tree / 'DEBIAN').mkdir(parents=True)
    (tree / 'DEBIAN' / 'control').write_text('Package: opencv-doc\nVersion: 1\nArchitecture: all\n'
                                            'Maintainer: test <t@example.org>\nDescription: test\n')
    (tree / DATA_DIR).mkdir(parents=True)
    mjpg_avi(tree / DATA_DIR / 'vtest.avi', 4)
    (tree / 'usr/share/doc/opencv-doc/index.html').write_text('not extracted')
    deb = tmp_path / 'opencv-doc_1_all.deb'
    subprocess.run(['dpkg-deb', '--build', '-Znone', str(tree), str(deb)], check=True, capture_output=True)
    if truncate:
        deb.write_bytes(deb.read_bytes()[:deb.stat().st_size * 2 // 3])
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'apt-get').write_text(f'#!/bin/sh\ncp {deb} .\n')
    (bin_dir / 'apt-get').chmod(0o755)
    return bin_dir


def test_a_tmp_on_another_file_system_still_fetches(tmp_path):
    """/tmp on a tmpfs (Debian 13, Fedora): renaming the clip out of it into the cache failed with EXDEV
    ("Invalid cross-device link"), so no fresh clone there ever got the sample."""
    if os.stat('/dev/shm').st_dev == os.stat(tmp_path).st_dev:
        pytest.skip('/dev/shm is on the same file system as the test folder')
    tmpdir = '/dev/shm/' + tmp_path.name
    os.makedirs(tmpdir, exist_ok=True)
    try:
        out = fetch(tmp_path, [package(tmp_path)], TMPDIR=tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    root = tmp_path / 'cache' / 'opencv-doc'
    assert out == f'{root / DATA_DIR / "vtest.avi"} 4\n', out
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file()) == [f'{DATA_DIR}/vtest.avi']


def test_a_corrupt_package_is_not_cached(tmp_path):
    out = fetch(tmp_path, [package(tmp_path, truncate=True)])
    assert out.startswith("error: could not obtain vtest.avi from Debian's opencv-doc package (") and \
        'VIDSEG_SAMPLE_VIDEO' in out and out.count('\n') == 1, out
    assert [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()] == []


def test_no_network_is_one_line_naming_apt_gets_error(tmp_path):
    """apt-get's whole stderr went into the message: a cut-off warning, then its error, over three lines."""
    if not shutil.which('apt-get'):
        pytest.skip('apt-get is not installed')
    if subprocess.run(['unshare', '-n', 'true'], capture_output=True).returncode != 0:
        pytest.skip('cannot make a network namespace here (needs root)')
    env = {**os.environ, 'VIDSEG_CACHE': str(tmp_path / 'cache')}
    env.pop('VIDSEG_SAMPLE_VIDEO', None)
    proc = subprocess.run(['unshare', '-n', sys.executable, '-c', FETCH], capture_output=True, text=True,
                          timeout=120, env=env)
    out = proc.stdout
    assert proc.returncode == 0 and out.count('\n') == 1, (out, proc.stderr[-2000:])
    assert 'apt-get download opencv-doc exited 100: E: ' in out and 'VIDSEG_SAMPLE_VIDEO=PATH' in out, out
    assert [p for p in (tmp_path / 'cache').rglob('*') if p.is_file()] == []


def stalled_dpkg_deb(tmp_path, name: str, then: str) -> Path:
    """A ``dpkg-deb`` on PATH that gives the real one's stream only after ``then`` (shell) returns; meanwhile the
    fetch has its staging folder, the .deb downloaded into it. Creates ``<name>.ready`` when it stalls."""
    real = shutil.which('dpkg-deb')
    bin_dir = tmp_path / f'{name}_bin'
    bin_dir.mkdir()
    ready = tmp_path / f'{name}.ready'
    (bin_dir / 'dpkg-deb').write_text(f'#!/bin/sh\ntouch {ready}\n{then}\nexec {real} "$@"\n')
    (bin_dir / 'dpkg-deb').chmod(0o755)
    return bin_dir


def start_fetch(tmp_path, path_dirs) -> subprocess.Popen:
    (tmp_path / 'tmp').mkdir(exist_ok=True)
    env = {**os.environ, 'VIDSEG_CACHE': str(tmp_path / 'cache'), 'TMPDIR': str(tmp_path / 'tmp')}
    env.pop('VIDSEG_SAMPLE_VIDEO', None)
    env['PATH'] = os.pathsep.join([*map(str, path_dirs), env['PATH']])
    return subprocess.Popen([sys.executable, '-c', FETCH], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120     # a bound on a hang, not a speed check
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f'{path} never came'
        time.sleep(0.05)


def staging(tmp_path) -> list[str]:
    root = tmp_path / 'cache' / 'opencv-doc'
    return sorted(p.name for p in root.iterdir() if p.name.startswith('.unpacking')) if root.is_dir() else []


@pytest.mark.parametrize('then', ['fetched', 'cached'])
def test_the_folder_of_a_fetch_killed_with_sigkill_is_removed_by_the_next(tmp_path, then):
    """A fetch killed with SIGKILL (an OOM kill, a CI time-out) left its .unpacking_* folder (22 MB unpacked) in the
    cache for ever, every later fetch finding the clip there, and the .deb it had downloaded in $TMPDIR."""
    apt = package(tmp_path)
    killed = start_fetch(tmp_path, [apt, stalled_dpkg_deb(tmp_path, 'a', 'sleep 600')])
    try:
        wait_for(tmp_path / 'a.ready', killed)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate()
    assert len(staging(tmp_path)) == 1
    clip = tmp_path / 'cache' / 'opencv-doc' / DATA_DIR / 'vtest.avi'
    if then == 'cached':        # fetched meanwhile by another process: this fetch returns the clip at once
        clip.parent.mkdir(parents=True)
        mjpg_avi(clip, 4)
    assert fetch(tmp_path, [apt]) == f'{clip} 4\n'
    assert staging(tmp_path) == []
    assert list((tmp_path / 'tmp').iterdir()) == []


def test_a_fetch_never_removes_the_folder_of_one_running_now(tmp_path):
    """pytest-xdist workers fetch at once: one unpacking must keep its folder while others fetch and finish."""
    apt = package(tmp_path)
    go = tmp_path / 'go'
    running = start_fetch(tmp_path, [apt, stalled_dpkg_deb(tmp_path, 'a', f'while [ ! -e {go} ]; do sleep 0.05; done')])
    try:
        wait_for(tmp_path / 'a.ready', running)
        mine = staging(tmp_path)
        assert len(mine) == 1
        clip = tmp_path / 'cache' / 'opencv-doc' / DATA_DIR / 'vtest.avi'
        for _ in ('fetches', 'finds it cached'):
            assert fetch(tmp_path, [apt]) == f'{clip} 4\n'
            assert staging(tmp_path) == mine
        go.touch()
        out, err = running.communicate(timeout=120)
    finally:
        go.touch()
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
    assert out == f'{clip} 4\n', (out, err[-2000:])
    assert staging(tmp_path) == []
