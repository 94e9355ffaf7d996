"""The package builds and installs both ways ROS users get it: pip (venv) and colcon (workspace)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODES = ['segment_node', 'segment_lifecycle_node', 'recorder_node', 'video_source_node']
SHARE_FILES = ['package.xml', 'launch/segment.launch.py', 'launch/record.launch.py', 'config/segment.yaml',
               'config/recorder.yaml', 'config/fastdds_shm.xml', 'config/vidseg.rviz']


def _check_prefix(prefix: Path):
    share = prefix / 'share' / 'vidseg_ros'
    for f in SHARE_FILES:
        assert (share / f).is_file(), f'{f} not installed under {share}'
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'vidseg_ros').is_file()
    for n in NODES:  # where `ros2 run` and launch_ros look for executables
        exe = prefix / 'lib' / 'vidseg_ros' / n
        assert exe.is_file() and os.access(exe, os.X_OK), f'{exe} missing or not executable'


def test_pip_install_is_found_by_ament_index():
    """`make test` installs the package non-editably into the venv first."""
    ament = pytest.importorskip('ament_index_python.packages')
    try:
        share = Path(ament.get_package_share_directory('vidseg_ros'))
    except ament.PackageNotFoundError:
        pytest.skip('vidseg_ros is not pip-installed here (run `make test`)')
    _check_prefix(share.parents[1])


def test_colcon_build(tmp_path):
    colcon = shutil.which('colcon') or str(Path(sys.executable).parent / 'colcon')
    if not Path(colcon).exists():
        pytest.skip('colcon not installed (requirements-dev.txt has it)')
    src = tmp_path / 'src' / 'vidseg_ros'
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith('models/'):
            continue  # weights are not needed to check the layout
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    result = subprocess.run([colcon, 'build', '--packages-select', 'vidseg_ros'], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / 'install' / 'vidseg_ros'
    _check_prefix(prefix)
    site = next(prefix.glob('lib/python3*/site-packages'))
    env = {**os.environ, 'PYTHONPATH': str(site), 'AMENT_PREFIX_PATH': f'{prefix}{os.pathsep}{sys.prefix}',
           'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}'}
    probe = subprocess.run([sys.executable, '-c', 'import vidseg_ros, ament_index_python.packages as a; '
                            'print(vidseg_ros.__file__); print(a.get_package_share_directory("vidseg_ros"))'],
                           env=env, capture_output=True, text=True, cwd=tmp_path, check=True).stdout.split()
    assert probe[0].startswith(str(site)) and probe[1] == str(prefix / 'share' / 'vidseg_ros')
