"""Model names resolve the same way everywhere: checkout, venv-installed copy (activated or not), env var."""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vidseg_ros.engine.model_paths as model_paths
from vidseg_ros.engine.stream import model_dirs, resolve_model

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkout_models_are_found_without_ament(monkeypatch):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    monkeypatch.delenv('VIDSEG_MODELS', raising=False)
    assert ROOT / 'models' in model_dirs()
    assert Path(resolve_model('camvid_fpn')) == ROOT / 'models' / 'camvid_fpn.pt'


def test_site_packages_is_not_taken_for_a_checkout(monkeypatch, tmp_path):
    # installed layout: .../site-packages/vidseg_ros/engine/model_paths.py -> parents[2] = site-packages
    monkeypatch.setattr(model_paths, 'REPO_MODELS', tmp_path / 'site-packages' / 'models')
    monkeypatch.setattr(sys, 'prefix', str(tmp_path / 'venv'))
    dirs = model_dirs()
    assert tmp_path / 'site-packages' / 'models' not in dirs
    assert tmp_path / 'venv' / 'share' / 'vidseg_ros' / 'models' in dirs


def test_env_var_folders_come_first(monkeypatch, tmp_path):
    (tmp_path / 'camvid_fpn.onnx').write_bytes(b'x')
    monkeypatch.setenv('VIDSEG_MODELS', f'{tmp_path / "missing"}{os.pathsep}{tmp_path}')
    assert model_dirs()[:2] == [tmp_path / 'missing', tmp_path]
    assert resolve_model('camvid_fpn') == str(tmp_path / 'camvid_fpn.onnx')


def test_unknown_name_lists_where_it_looked(monkeypatch):
    from vidseg_ros.models.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='VIDSEG_MODELS') as e:
        resolve_model('no_such_model')
    assert str(ROOT / 'models') in str(e.value)


def test_unusable_env_var_entries_are_marked_and_warned_once(monkeypatch, tmp_path, caplog):
    """$VIDSEG_MODELS naming a missing folder or a file was ignored without a word; the 'not found' error
    listed it like any folder."""
    import logging

    from vidseg_ros.models.checkpoint import CheckpointError
    afile = tmp_path / 'models.txt'
    afile.write_text('')
    monkeypatch.setattr(model_paths, '_WARNED_ENV_DIRS', set())
    monkeypatch.setenv('VIDSEG_MODELS', os.pathsep.join([str(tmp_path / 'typo'), str(afile), str(tmp_path)]))
    with caplog.at_level(logging.WARNING):
        with pytest.raises(CheckpointError) as e:
            resolve_model('no_such_model')
        assert Path(resolve_model('camvid_fpn')) == ROOT / 'models' / 'camvid_fpn.pt'   # found further on
    assert f'in {tmp_path / "typo"} (missing), {afile} (not a folder), {tmp_path}, ' in str(e.value), str(e.value)
    assert [r.getMessage() for r in caplog.records] == [
        f'$VIDSEG_MODELS lists {tmp_path / "typo"} (missing), {afile} (not a folder): no models are looked up '
        'there']


INSTALLED = Path(sys.prefix) / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}' / \
    'site-packages' / 'vidseg_ros' / 'engine' / 'model_paths.py'


@pytest.mark.skipif(not INSTALLED.is_file() or not filecmp.cmp(INSTALLED, ROOT / 'vidseg_ros/engine/model_paths.py',
                                                               shallow=False),
                    reason='no current venv-installed copy (make install)')
def test_installed_vidseg_finds_shipped_models_by_name(tmp_path):
    """`vidseg info camvid_fpn` from any folder, no AMENT_PREFIX_PATH (an activated venv, or not)."""
    env = {k: v for k, v in os.environ.items() if k not in ('AMENT_PREFIX_PATH', 'PYTHONPATH', 'VIDSEG_MODELS')}
    vidseg = Path(sys.executable).with_name('vidseg')
    for activated in (False, True):
        run_env = dict(env, PATH=f'{vidseg.parent}{os.pathsep}{env.get("PATH", "")}',
                       VIRTUAL_ENV=sys.prefix) if activated else env
        cmd = ['vidseg' if activated else str(vidseg), 'info', 'camvid_fpn']
        p = subprocess.run(cmd, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert '"file": "' + str(Path(sys.prefix) / 'share' / 'vidseg_ros' / 'models' / 'camvid_fpn.pt') in p.stdout


@pytest.mark.parametrize('key,value,message', [
    ('provenance', None, 'meta.provenance: null is not a value of this setting'),
    ('arch_config', None, 'meta.arch_config: null is not a value of this setting'),
    ('input_hw', [100000, 100000], 'meta.input_hw: 100000 is out of range 8..8192'),
    ('classes', ['a', 'b', 'c'], "meta.classes: 3 name(s) ['a', 'b', 'c'] for a model with 2 output channels"),
])
def test_info_of_a_checkpoint_with_bad_meta_is_a_user_error(tmp_path, key, value, message):
    """`vidseg info` on a checkpoint whose meta holds a wrong value: exit 2, one line naming the file and the
    key, where it crashed (exit 1) or printed the bad value as if it were fine."""
    import torch
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    model = create_model('truncated_fpn', num_classes=2, width_mult=0.25)
    good = save_checkpoint(tmp_path / 'good.pt', model, default_meta('truncated_fpn', model.arch_config,
                                                                      classes=['bg', 'fg'], input_hw=[64, 96]))
    r = CliRunner().invoke(app, ['info', str(good)])
    assert r.exit_code == 0, r.output
    raw = torch.load(good, weights_only=True)
    raw['meta'][key] = value
    torch.save(raw, tmp_path / 'bad.pt')
    r = CliRunner().invoke(app, ['info', str(tmp_path / 'bad.pt')])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and f'bad.pt: {message}' in lines[0] and 'internal error' not in lines[0]


@pytest.mark.parametrize('device', ['meta', 'cpu:1'])
def test_bench_refuses_a_device_the_node_refuses(device):
    """`vidseg bench --device meta` ended in exit 1 'internal error' (cpu:1 ran): a user error now, exit 2."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    r = CliRunner().invoke(app, ['bench', 'untrained:truncated_fpn', '--frames', '1', '--device', device])
    assert r.exit_code == 2, r.output
    assert f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N" in r.output


@pytest.mark.parametrize('args, message', [
    (['--input-hw', '1x1'], r'input_hw: 1 is out of range 8..8192'),
    (['--input-hw', '8x8193'], r'input_hw: 8193 is out of range 8..8192'),
    (['--keyframe-interval', '100000'], r'keyframe_interval: 100000 is out of range 1..10000'),
])
def test_bench_applies_the_engine_setting_ranges(args, message):
    """`vidseg bench` built its EngineConfig unchecked: these ran with exit 0; now exit 2 with the range."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    r = CliRunner().invoke(app, ['bench', 'untrained:truncated_fpn', '--frames', '1', *args])
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_bench_times_at_the_num_threads_the_node_takes():
    """The node's num_threads setting had no `vidseg bench` option: the CLI could not time what the node runs."""
    import json
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bench', 'untrained:truncated_fpn', '--frames', '1',
                        '--input-hw', '64x64', '--device', 'cpu', '--num-threads', '1'], capture_output=True, text=True,
                       timeout=120, cwd=root, env={**os.environ, 'PYTHONPATH': str(root)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)['torch_threads'] == 1
