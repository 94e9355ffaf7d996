"""Fixtures for ROS tests: real rclpy nodes in real processes (skipped where rclpy is absent)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
sys.path.insert(0, str(Path(__file__).parent))
from ros_helpers import ROOT, NodeProcess, Probe  # noqa: E402


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
def real_frames():
    """A few real CamVid val frames (15 Hz drive) as RGB arrays, or textured synthetic ones without data."""
    data = Path(os.environ.get('VIDSEG_DATA', ROOT.parent / 'shared' / 'data'))
    folder = data / 'camvid' / 'val'
    if folder.is_dir():
        from vidseg_ros.data.images import read_rgb
        return [read_rgb(p) for p in sorted(folder.glob('*.webp'))[:12]]
    rng = np.random.default_rng(0)
    return [np.clip(rng.normal(128, 40, (360, 480, 3)), 0, 255).astype(np.uint8) for _ in range(12)]
