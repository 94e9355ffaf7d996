"""Fixtures for ROS tests: real rclpy nodes in real processes (skipped where rclpy is absent)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip('rclpy')
from support.paths import DATA
from support.ros_helpers import NodeProcess, Probe  # noqa: E402  (needs rclpy)


@pytest.fixture
def start_node(tmp_path):
    procs: list[NodeProcess] = []

    def _start(module, params=None, remaps=None, name=None):
        p = NodeProcess(module, params, remaps, tmp_path, name)
        procs.append(p)
        return p

    yield _start
    for p in procs:
        p.stop()


@pytest.fixture
def probe():
    p = Probe(f'probe_{os.getpid()}')
    yield p
    p.close()


@pytest.fixture(scope='session')
def real_frames(request):
    """12 real RGB frames: CamVid val (15 Hz drive) when ../shared/data has it, else the opencv-doc
    clip resized to CamVid's 360x480 (noise would not survive JPEG or optical flow like real video)."""
    folder = DATA / 'camvid' / 'val'
    if folder.is_dir():
        from vidseg_ros.data.images import read_rgb
        return [read_rgb(p) for p in sorted(folder.glob('*.webp'))[:12]]
    from vidseg_ros.data.sample_video import read_frames
    return read_frames(request.getfixturevalue('sample_video'), 12, every=2, size_hw=(360, 480))
