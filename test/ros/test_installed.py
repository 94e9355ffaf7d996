"""The wheel installed into a fresh virtual environment, run from a folder outside the checkout, with no
PYTHONPATH: what a user gets from `pip install vidseg_ros-*.whl`. Anything found through the working
directory or the source tree instead of the installed package fails here.

The fresh venv holds only vidseg_ros; its dependencies (torch, the ROS wheels, launch) are this venv's,
added after its own site-packages by a .pth file: installing them anew takes minutes and gigabytes
(test_distribution checks what the wheel declares).
"""
from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.launch_helpers import BIN, real_clip, require_launch

require_launch()
import psutil  # noqa: E402  (ros2_extras brings it)
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from support.ros_helpers import Probe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NODES = ['recorder_node', 'segment_lifecycle_node', 'segment_node', 'video_source_node']


def _run(cmd, env, cwd, timeout=120) -> str:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f'{" ".join(map(str, cmd))} -> {r.returncode}\n{r.stdout}\n{r.stderr}'
    return r.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('installed')
    src = tmp / 'src'
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for f in files.splitlines():
        if (ROOT / f).is_file() and not f.startswith(('test/', '.ci/')):
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    # the tests run with PYTHONPATH=. (the checkout, where pip saw vidseg_ros "already installed"): none here
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIDSEG_MODELS', 'VIRTUAL_ENV')}
    pip = [sys.executable, '-m', 'pip']
    _run([*pip, 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(tmp / 'dist'), str(src)], env, tmp)
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], env, tmp)
    _run([*pip, '--python', str(venv / 'bin' / 'python'), 'install', '-q', '--no-deps', '--no-index',
          str(next((tmp / 'dist').glob('*.whl')))], env, tmp)
    site = next((venv / 'lib').glob('python3*/site-packages'))
    assert (site / 'vidseg_ros').is_dir()
    (site / 'zz_borrowed_dependencies.pth').write_text(
        f'import site; site.addsitedir({sysconfig.get_paths()["purelib"]!r})\n')
    env.update(AMENT_PREFIX_PATH=f'{venv}{os.pathsep}{sys.prefix}',
               FASTDDS_DEFAULT_PROFILES_FILE=str(venv / 'share' / 'vidseg_ros' / 'config' / 'fastdds_shm.xml'),
               PATH=f'{venv / "bin"}{os.pathsep}{env["PATH"]}')
    cwd = tmp / 'elsewhere'
    cwd.mkdir()
    yield SimpleNamespace(venv=venv, env=env, cwd=cwd, python=str(venv / 'bin' / 'python'), tmp=tmp)


def test_installed_package_is_found_and_runs_outside_the_checkout(installed):
    i = installed
    where = _run([i.python, '-c', 'import vidseg_ros; print(vidseg_ros.__file__)'], i.env, i.cwd).strip()
    assert where.startswith(str(i.venv)), where
    info = _run([str(i.venv / 'bin' / 'vidseg'), 'info', 'camvid_fpn'], i.env, i.cwd)
    assert f'{i.venv}/share/vidseg_ros/models/camvid_fpn.pt' in info
    ros2 = [i.python, str(BIN / 'ros2')]      # the ros2 CLI of this venv, run by the fresh one
    assert _run([*ros2, 'pkg', 'prefix', 'vidseg_ros'], i.env, i.cwd).strip() == str(i.venv)
    listed = _run([*ros2, 'pkg', 'executables', 'vidseg_ros'], i.env, i.cwd).split()
    assert sorted(listed[1::2]) == NODES


def test_installed_launch_segments_a_clip(installed):
    """`ros2 launch vidseg_ros segment.launch.py video:=...` from the install: masks are published, and by
    nodes the fresh venv's python runs (lib/vidseg_ros/<node> picks its own environment's interpreter)."""
    i = installed
    probe = Probe(f'installed_probe_{os.getpid()}')
    masks = probe.collect(Image, '/vidseg_segmenter/mask', QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    log = open(i.tmp / 'launch.log', 'w')
    tty, stdin = pty.openpty()
    proc = subprocess.Popen([i.python, str(BIN / 'ros2'), 'launch', 'vidseg_ros', 'segment.launch.py',
                             f'video:={real_clip()}'], env=i.env, cwd=i.cwd, stdin=stdin, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # as in a terminal
    os.close(stdin)
    try:
        probe.wait_for(lambda: len(masks) >= 2, 180, 'masks from the installed segmenter')
        pythons = {p.cmdline()[0] for p in psutil.Process(proc.pid).children()}
        assert pythons and all(p.startswith(str(i.venv)) for p in pythons), pythons
    except AssertionError as e:
        log.flush()
        raise AssertionError(f'{e}\nlaunch output:\n{(i.tmp / "launch.log").read_text()[-4000:]}') from None
    finally:
        probe.close()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        os.close(tty)
    assert proc.returncode == 0, (i.tmp / 'launch.log').read_text()[-4000:]
