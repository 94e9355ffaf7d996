"""Core first, ROS last: the offline half (models, engine, data, training, the `vidseg` CLI) works where no ROS
is installed, e.g. a training server. Each run is a fresh interpreter with the ROS Python packages made
unimportable (``sys.modules[name] = None``: ``import rclpy`` raises ImportError), as on a machine without them."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from support.paths import ROOT

ROS_PACKAGES = ('rclpy', 'rosidl_runtime_py', 'sensor_msgs', 'std_msgs', 'builtin_interfaces', 'diagnostic_msgs',
                'std_srvs', 'lifecycle_msgs', 'rcl_interfaces', 'launch', 'launch_ros', 'message_filters',
                'cv_bridge', 'rosbag2_py')
WITHOUT_ROS = f'import sys\nfor name in {ROS_PACKAGES!r}:\n    sys.modules[name] = None\n'


def without_ros(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', WITHOUT_ROS + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def vidseg(*args: str) -> subprocess.CompletedProcess:
    return without_ros(f'sys.argv = ["vidseg", *{list(args)!r}]\nfrom vidseg_ros.cli import main\nmain()')


def test_the_blocker_blocks():
    """Otherwise the tests below prove nothing."""
    r = without_ros('import rclpy')
    assert r.returncode != 0 and 'import of rclpy halted' in r.stderr, r.stderr


def test_every_module_outside_vidseg_ros_ros_imports_without_ros():
    r = without_ros('''
import importlib, pkgutil, vidseg_ros
failed = []
for info in pkgutil.walk_packages(vidseg_ros.__path__, 'vidseg_ros.'):
    if not info.name.startswith('vidseg_ros.ros'):
        try:
            importlib.import_module(info.name)
        except Exception as e:
            failed.append(f'{info.name}: {e!r}')
print(len(failed), *failed, sep='\\n')
''')
    assert r.returncode == 0 and r.stdout.split('\n')[0] == '0', r.stdout + r.stderr


def test_the_offline_loop_runs_without_ros(tmp_path):
    """frames -> bag -> all-frame dataset, and a shipped model read: the CLI commands a training machine runs."""
    frames = tmp_path / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(frames / f'{i:04d}.png'), rng.integers(0, 255, (24, 32, 3), np.uint8))
    r = vidseg('bag-from-frames', str(frames), '--out', str(tmp_path / 'bag'))
    assert r.returncode == 0, r.stderr
    r = vidseg('extract', str(tmp_path / 'bag'), '--out', str(tmp_path / 'dataset'))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / 'dataset').rglob('*.png'))) == 3
    r = vidseg('info', 'camvid_fpn')
    assert r.returncode == 0 and 'Road' in r.stdout, r.stdout + r.stderr
