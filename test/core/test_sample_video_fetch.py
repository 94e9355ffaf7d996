"""Fetching the sample clip on a fresh clone (no ../shared, nothing cached).

The package is a real .deb built here with dpkg-deb and unpacked by the real code; only apt-get's download is
stood in for by a script on PATH that copies it (no network in CI). The no-network case runs the real apt-get
in a network namespace of its own (root only; skipped otherwise)."""
import os
import shutil
import subprocess
import sys

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
