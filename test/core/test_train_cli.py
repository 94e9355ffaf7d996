"""`vidseg train --resume` of a run started with `--overwrite`: it resumes; --overwrite need not be repeated.

A run writes `output` only when it completes, so an interrupted run started with --overwrite (to replace a
shipped model) left the old output in place, and `--resume` alone was refused ('not written by this run ...
one started with --overwrite resumes with --overwrite'). The grant is kept in the run's last.pt now (the run folder's
overwrite_output.json of the version before is still read), so `training.loop.train` called as a library honours it."""
from pathlib import Path

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from vidseg_ros.config import ConfigError
from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, read_checkpoint, save_checkpoint
from vidseg_ros.tools import commands_train
from vidseg_ros.tools.commands_train import train
from vidseg_ros.training.run_outputs import GRANT_KEY, GRANT_NAME

HW = [64, 64]


class _Interrupt(Exception):
    pass


def _drive(root: Path) -> Path:
    """An extracted 6-frame drive, labels on frames 0 and 3."""
    rng = np.random.default_rng(0)
    (root / 'images' / 'a').mkdir(parents=True)
    (root / 'labels' / 'a').mkdir(parents=True)
    records = []
    for i in range(6):
        image, label = root / 'images' / 'a' / f'{i}.png', root / 'labels' / 'a' / f'{i}.png'
        cv2.imwrite(str(image), rng.integers(0, 255, (48, 64, 3), np.uint8))
        if i in (0, 3):
            cv2.imwrite(str(label), np.full((48, 64), i // 3, np.uint8))
        records.append(FrameRecord('a', i, image, label if i in (0, 3) else None, i, 'human' if i in (0, 3) else 'none'))
    write_index(root, records)
    (root / 'dataset.yaml').write_text(yaml.safe_dump({'classes': ['bg', 'obj'], 'ignore_index': 255}))
    return root


def _config(tmp_path, output: Path, epochs: int = 2) -> Path:
    config = tmp_path / f'c{epochs}.yaml'
    config.write_text(yaml.safe_dump({
        'name': 't', 'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 32}, 'dataset': 'folder',
        'data_root': str(tmp_path / 'drive'), 'train_split': 'all', 'val_split': '', 'input_hw': HW,
        'batch_size': 2, 'epochs': epochs, 'num_threads': 1, 'device': 'cpu', 'hflip': False,
        'runs_dir': str(tmp_path / 'runs'), 'output': str(output)}))
    return config


def _shipped(path: Path) -> Path:
    """A model already at `output` (as a shipped one is), not written by the run."""
    model = create_model('keyframe_fpn', num_classes=2, fpn_ch=32)
    return save_checkpoint(path, model, default_meta('keyframe_fpn', model.arch_config, classes=['bg', 'obj']))


def _interrupted(monkeypatch, config, **kw):
    """`vidseg train` stopped (Ctrl-C) after its first epoch was saved."""
    real = commands_train._Progress.__call__

    def stop(self, info):
        real(self, info)
        if info['kind'] == 'epoch':
            raise _Interrupt
    with monkeypatch.context() as m:
        m.setattr(commands_train._Progress, '__call__', stop)
        with pytest.raises(_Interrupt):
            train(config, progress=False, **kw)


def test_a_run_started_with_overwrite_resumes_with_resume_alone(tmp_path, monkeypatch):
    _drive(tmp_path / 'drive')
    out = _shipped(tmp_path / 'model.pt')
    before = out.read_bytes()
    config = _config(tmp_path, out)
    with pytest.raises(ConfigError, match='--overwrite to replace it'):
        train(config, progress=False)                 # never without --overwrite
    _interrupted(monkeypatch, config, overwrite=True)
    assert out.read_bytes() == before and (tmp_path / 'runs' / 't' / 'last.pt').is_file()
    done = train(config, resume=True, progress=False)
    assert done['epochs'] == 2 and len(done['history']) == 2            # resumed at epoch 2, not from scratch
    assert read_checkpoint(out)['meta']['metrics']['epoch'] == 2 and out.read_bytes() != before


def test_the_grant_covers_only_the_output_it_was_given_for(tmp_path, monkeypatch):
    """--overwrite replaced model.pt; a resume writing another existing file is still refused."""
    _drive(tmp_path / 'drive')
    out, other = _shipped(tmp_path / 'model.pt'), _shipped(tmp_path / 'other.pt')
    _interrupted(monkeypatch, _config(tmp_path, out), overwrite=True)
    with pytest.raises(ConfigError, match=r'other.pt exists and was not written by this run'):
        train(_config(tmp_path, other), resume=True, progress=False)
    assert train(_config(tmp_path, out), resume=True, progress=False)['epochs'] == 2


def test_a_run_started_without_overwrite_still_needs_it_to_replace_an_output(tmp_path, monkeypatch):
    """A stale grant of an earlier run of this name is not inherited by a new run started without --overwrite."""
    _drive(tmp_path / 'drive')
    out = tmp_path / 'model.pt'
    _interrupted(monkeypatch, _config(tmp_path, _shipped(out)), overwrite=True)
    assert _grant(tmp_path) == str(out.resolve())
    for name in ('last.pt', 'best.pt'):
        (tmp_path / 'runs' / 't' / name).unlink()
    out.unlink()
    _interrupted(monkeypatch, _config(tmp_path, out))       # a new run: output did not exist
    assert _grant(tmp_path) is None
    _shipped(out)                                          # someone else's model appears there meanwhile
    with pytest.raises(ConfigError, match='was not written by this run'):
        train(_config(tmp_path, out), resume=True, progress=False)


def _grant(tmp_path):
    return torch.load(tmp_path / 'runs' / 't' / 'last.pt', weights_only=True)[GRANT_KEY]


def _library_run(tmp_path, output, interrupt=False, **kw):
    """`training.loop.train` called as a library (no vidseg train around it), stopped after its first epoch."""
    from vidseg_ros.training.config import load_train_config
    from vidseg_ros.training.loop import train as train_loop

    def stop(info):
        if interrupt and info['kind'] == 'epoch':
            raise _Interrupt
    return train_loop(load_train_config(_config(tmp_path, output)), callback=stop, **kw)


def test_a_library_resume_of_a_run_started_with_overwrite_replaces_its_output(tmp_path):
    """The grant lived in overwrite_output.json, written and read by `vidseg train` only: training.loop.train
    resuming a run it had started with overwrite=True was refused ('exists and was not written by this run')."""
    _drive(tmp_path / 'drive')
    out = _shipped(tmp_path / 'model.pt')
    before = out.read_bytes()
    with pytest.raises(_Interrupt):
        _library_run(tmp_path, out, interrupt=True, overwrite=True)
    assert out.read_bytes() == before and _grant(tmp_path) == str(out.resolve())
    with pytest.raises(_Interrupt):       # interrupted again: the resumed run keeps the grant in its last.pt
        _library_run(tmp_path, out, interrupt=True, resume=True)
    assert _grant(tmp_path) == str(out.resolve())
    assert _library_run(tmp_path, out, resume=True)['epochs'] == 2
    assert read_checkpoint(out)['meta']['metrics']['epoch'] == 2


def test_a_run_of_the_last_version_with_its_grant_file_resumes_with_resume_alone(tmp_path, monkeypatch):
    """A last.pt without the grant (written by the version before) and the run folder's overwrite_output.json:
    the json still grants the output, and the first last.pt saved on takes the grant over from it."""
    _drive(tmp_path / 'drive')
    out = _shipped(tmp_path / 'model.pt')
    config = _config(tmp_path, out)
    _interrupted(monkeypatch, config, overwrite=True)
    run = tmp_path / 'runs' / 't'
    blob = torch.load(run / 'last.pt', weights_only=True)
    del blob[GRANT_KEY]
    torch.save(blob, run / 'last.pt')
    with pytest.raises(ConfigError, match='was not written by this run'):    # no grant anywhere: refused
        train(config, resume=True, progress=False)
    (run / GRANT_NAME).write_text(json.dumps({'output': str(out.resolve())}))
    _interrupted(monkeypatch, config, resume=True)        # resumes; its epoch saves the grant in last.pt
    assert _grant(tmp_path) == str(out.resolve()) and not (run / GRANT_NAME).exists()
    assert train(config, resume=True, progress=False)['epochs'] == 2      # complete: output written
