"""A model path that is there but is no model file (a folder, a FIFO, a device, a link that loops) is named as what
it is by ``stream.resolve_model``, so by every user of it: the engine (hence the node), `vidseg info` and `eval`.
All four were 'model file not found'. Nothing is opened: reading a FIFO would block, /dev/zero never ends."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter, resolve_model
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, default_meta, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FOLDER, FIFO = 'is a folder', 'is not a regular file (a FIFO, a device...)'
LOOP = 'is a link to nothing, or one that loops'


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    path.symlink_to(path.with_name('other.pt'))
    path.with_name('other.pt').symlink_to(path)
    return path


CASES = {'folder': (lambda p: (p.mkdir(), p)[1], FOLDER), 'fifo': (_fifo, FIFO), 'link-loop': (_loop, LOOP),
         'dev-zero': (lambda p: Path('/dev/zero'), FIFO), 'dev-urandom': (lambda p: Path('/dev/urandom'), FIFO)}


def _one_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize('case', list(CASES))
def test_a_model_path_that_is_no_regular_file_says_what_it_is(tmp_path, case):
    make, says = CASES[case]
    path = make(tmp_path / 'm.pt')
    expected = f'model file {path} {says}'
    with pytest.raises(CheckpointError) as e:
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu'))
    assert str(e.value) == expected
    (tmp_path / 'data').mkdir()
    for argv in (['info', str(path)], ['eval', str(path), str(tmp_path / 'data'), '--out-dir', str(tmp_path)]):
        line = _one_line(CliRunner().invoke(app, argv))
        assert expected in line and 'not found' not in line, line


def test_a_missing_model_file_is_still_not_found(tmp_path):
    with pytest.raises(CheckpointError, match='model file not found: '):
        resolve_model(str(tmp_path / 'm.pt'))


def test_the_console_script_says_what_dev_zero_is_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'eval', '/dev/zero', str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, 'PYTHONPATH': '.'})
    assert p.returncode == 2 and p.stderr.strip() == f'vidseg eval: error: model file /dev/zero {FIFO}', p.stderr


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model('truncated_fpn', width_mult=0.25)
    return save_checkpoint(tmp_path_factory.mktemp('ck') / 'm.pt', model, default_meta('truncated_fpn',
                                                                                       model.arch_config))


def test_a_name_whose_file_is_no_model_file_is_passed_over_and_said_when_none_is_found(tmp_path, checkpoint,
                                                                                     monkeypatch):
    """A model name is looked up in each models folder: a folder or a FIFO by that name is no model, and a file
    further on is taken as before; where none is, the error names what is there."""
    first, second = tmp_path / 'first', tmp_path / 'second'
    first.mkdir()
    second.mkdir()
    (first / 'zz_helper_model.pt').mkdir()
    _fifo(first / 'zz_helper_model.onnx')
    monkeypatch.setenv('VIDSEG_MODELS', os.pathsep.join([str(first), str(second)]))
    with pytest.raises(CheckpointError) as e:
        resolve_model('zz_helper_model')
    message = str(e.value)
    assert message.startswith(f"model 'zz_helper_model' not found; {first / 'zz_helper_model.pt'} {FOLDER}; "
                              f"{first / 'zz_helper_model.onnx'} {FIFO}; looked for"), message
    (second / 'zz_helper_model.pt').write_bytes(checkpoint.read_bytes())
    assert resolve_model('zz_helper_model') == str(second / 'zz_helper_model.pt')


def test_a_path_that_cannot_be_looked_at_says_why_not_what_it_is_not(tmp_path):
    """A name longer than the file system takes (or a folder on the way this process may not enter) is neither
    missing nor 'not a regular file': the OSError names the path and the reason (the CLI's one line)."""
    from vidseg_ros.engine.backends import open_exported
    path = tmp_path / ('x' * 2000) / 'm.onnx'
    for load in (resolve_model, open_exported):
        with pytest.raises(OSError, match='File name too long'):
            load(str(path))
    line = _one_line(CliRunner().invoke(app, ['info', str(path)]))
    assert line.endswith('/m.onnx: File name too long'), line


def test_a_models_folder_this_process_may_not_enter_is_passed_over_and_said(tmp_path, checkpoint, monkeypatch):
    import vidseg_ros.engine.model_paths as model_paths
    closed, second = tmp_path / 'closed', tmp_path / 'second'
    closed.mkdir()
    second.mkdir()
    stat = os.stat

    def refusing(path, *args, **kw):
        if str(path).startswith(str(closed) + os.sep):    # the folder is there; what is in it cannot be seen
            raise PermissionError(13, 'Permission denied', str(path))
        return stat(path, *args, **kw)
    monkeypatch.setattr(model_paths.os, 'stat', refusing)
    monkeypatch.setenv('VIDSEG_MODELS', os.pathsep.join([str(closed), str(second)]))
    with pytest.raises(CheckpointError, match=f'; {closed / "zz_helper_model.pt"} cannot be looked at '
                                              r'\(Permission denied\);'):
        resolve_model('zz_helper_model')
    (second / 'zz_helper_model.pt').write_bytes(checkpoint.read_bytes())
    assert resolve_model('zz_helper_model') == str(second / 'zz_helper_model.pt')


@pytest.mark.parametrize('packages', ['site-packages', 'dist-packages'])
def test_shipped_models_are_found_under_the_prefix_the_package_is_installed_in(tmp_path, packages):
    """`pip install --prefix P` (or Debian's pip: the package under /usr/local, sys.prefix /usr) puts the
    models in P/share/vidseg_ros, which no lookup searched: "model 'camvid_fpn' not found"."""
    import shutil
    root = Path(__file__).resolve().parents[2]
    lib = tmp_path / 'pfx' / 'lib' / 'python3' / packages
    shutil.copytree(root / 'vidseg_ros', lib / 'vidseg_ros', ignore=shutil.ignore_patterns('__pycache__'))
    share = tmp_path / 'pfx' / 'share' / 'vidseg_ros'
    (share / 'models').mkdir(parents=True)
    shutil.copy(root / 'package.xml', share)
    env = {k: v for k, v in os.environ.items() if k not in ('AMENT_PREFIX_PATH', 'VIDSEG_MODELS')}
    r = subprocess.run([sys.executable, '-c', 'from vidseg_ros.engine.model_paths import model_dirs; '
                        'print("\\n".join(map(str, model_dirs())))'], capture_output=True, text=True,
                       cwd=tmp_path, env={**env, 'PYTHONPATH': str(lib)}, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert str(share / 'models') in r.stdout.splitlines(), r.stdout
