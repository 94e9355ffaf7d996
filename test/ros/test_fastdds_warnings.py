"""Every node says, in our words, when FastDDS will lose large images: FASTDDS_DEFAULT_PROFILES_FILE set to a
file that is missing or not XML (FastDDS printed "XMLPARSER Error" and fell back to its 512 KB segment), or
/dev/shm with less free space than the profile's 32 MB segment (1080p frames silently did not arrive)."""
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

pytest.importorskip('rclpy')
from support.paths import ROOT  # noqa: E402

LOST = 'large images will be lost'


def start_node(tmp_path, env: dict, wrap: list[str] = ()) -> subprocess.Popen:
    """video_source_node (the lightest node) on one frame, looping until stopped; output to node.log."""
    cv2.imwrite(str(tmp_path / 'frame.png'), np.zeros((8, 8, 3), np.uint8))
    env = {**os.environ, **env,
           'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    args = [*wrap, sys.executable, '-m', 'vidseg_ros.ros.video_source_node', '--ros-args',
            '-p', f'source:={tmp_path}', '-p', 'loop:=true', '-p', 'rate_hz:=2.0']
    return subprocess.Popen(args, stdout=open(tmp_path / 'node.log', 'w'), stderr=subprocess.STDOUT, env=env,
                            cwd=str(tmp_path))


def log_once_started(proc, tmp_path) -> str:
    """The node's log once it publishes (its start-up warnings come before), then stops it with SIGINT."""
    log = tmp_path / 'node.log'
    deadline = time.monotonic() + 60
    try:
        while 'publishing' not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(2)
        proc.wait(20)
    return log.read_text()


def test_the_shipped_profile_gives_no_warning(tmp_path):
    text = log_once_started(start_node(tmp_path, {'FASTDDS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' /
                                                                                       'fastdds_shm.xml')}), tmp_path)
    assert 'publishing' in text and LOST not in text, text


@pytest.mark.parametrize('case', ['missing', 'not_xml'])
def test_a_missing_or_broken_profile_is_a_warning_at_start(tmp_path, case):
    path = tmp_path / 'profile.xml'
    if case == 'not_xml':
        path.write_text('<profiles><transport_descriptors>')
    text = log_once_started(start_node(tmp_path, {'FASTDDS_DEFAULT_PROFILES_FILE': str(path)}), tmp_path)
    (line,) = [ln for ln in text.splitlines() if LOST in ln]
    assert '[WARN]' in line and f'FASTDDS_DEFAULT_PROFILES_FILE={path}' in line, text
    assert ('does not exist' if case == 'missing' else 'is not valid XML') in line


def test_a_nearly_full_dev_shm_is_a_warning_at_start(tmp_path):
    """/dev/shm of 1 MB (a mount namespace of the node's own: the machine's /dev/shm is left alone)."""
    if os.geteuid() != 0 or shutil.which('unshare') is None:
        pytest.skip('a private /dev/shm needs root and unshare')
    probe = subprocess.run(['unshare', '-m', 'mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', '/dev/shm'],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f'cannot mount a private /dev/shm here: {probe.stderr.strip()}')
    wrap = ['unshare', '-m', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$@"', 'sh']
    text = log_once_started(start_node(tmp_path, {'FASTDDS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' /
                                                                                       'fastdds_shm.xml')}, wrap),
                            tmp_path)
    (line,) = [ln for ln in text.splitlines() if LOST in ln]
    assert '[WARN]' in line and '/dev/shm has' in line and 'MiB free, less than the 32.0 MiB' in line, text
