"""``python -m vidseg_ros.tools.cli_defaults`` rewrites its generated block from the homes, and ``--check`` says
when it is stale; run on a copy of the package (it rewrites its own source)."""
import shutil
import subprocess
import sys
from pathlib import Path

import vidseg_ros


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.tools.cli_defaults', *args], cwd=root,
                          env={'PYTHONPATH': str(root), 'PATH': '/usr/bin:/bin'}, capture_output=True, text=True,
                          timeout=300)


def test_a_stale_block_is_reported_by_check_and_regenerated(tmp_path):
    src = Path(vidseg_ros.__file__).parent
    shutil.copytree(src, tmp_path / 'vidseg_ros', ignore=shutil.ignore_patterns('__pycache__'))
    own = tmp_path / 'vidseg_ros' / 'tools' / 'cli_defaults.py'
    good = own.read_text()
    own.write_text(good.replace('DEFAULTS = {', "DEFAULTS = {'gone': {'x': 1}, ", 1))     # a command since removed
    check = _run(tmp_path, '--check')
    assert check.returncode == 1 and 'stale: run python -m vidseg_ros.tools.cli_defaults' in check.stderr
    assert _run(tmp_path).returncode == 0
    assert own.read_text() == good
    check = _run(tmp_path, '--check')
    assert check.returncode == 0 and check.stderr == ''
