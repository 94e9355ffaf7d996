"""A first-release checkpoint with more output channels than class names (``num_classes: 12`` on CamVid, whose 11
names the first release stored: its void counted as a class). Every reader refused it with a right line that said
no way out; the line now gives the command that names the channels, and following it gives a checkpoint every
reader takes, with the same weights (the same masks). An inconsistent file is still never read as it is."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg_ros.constants import CAMVID_CLASSES, CAMVID_PALETTE
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import (FORMAT, CheckpointError, add_class_names, default_meta,
                                          init_from_checkpoint, load_checkpoint, read_checkpoint)

ROOT = Path(__file__).resolve().parents[2]


def _first_release(path: Path, classes: list[str], palette: list[list[int]], channels: int) -> Path:
    """As the first release's ``checkpoint_meta`` wrote it: the data's names and palette, ``arch_config.num_classes``
    as the config set it (torch.save of format/state_dict/meta, no check)."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=channels, cached_levels=0, fpn_ch=16)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=classes, palette=palette, ignore_index=11,
                        input_hw=[64, 64])
    meta['train_config'] = {'name': 'camvid_fpn', 'dataset': 'camvid', 'num_classes': channels, 'ignore_index': 11}
    torch.save({'format': FORMAT, 'state_dict': model.state_dict(), 'meta': meta}, path)
    return path


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'PYTHONPATH': str(ROOT)})


def _advice(line: str) -> list[str]:
    """The command the refusal gives (after 'name channel(s) N: ', before ' (writes'), `vidseg` run as this
    interpreter's module (the checkout's, not whatever `vidseg` is on PATH)."""
    command = shlex.split(re.search(r'; name channels? [\d.]+: (.*) \(writes [^(]*\)$', line)[1])
    assert command[:2] == ['vidseg', 'name-classes'], command
    return [sys.executable, '-m', 'vidseg_ros.cli', *command[1:]]


def test_the_refusal_of_a_camvid_checkpoint_with_a_12th_channel_says_how_to_name_it_and_that_works(tmp_path):
    old = _first_release(tmp_path / 'old model.pt', list(CAMVID_CLASSES), CAMVID_PALETTE, 12)
    before = old.read_bytes()
    model = create_model('keyframe_fpn', num_classes=12, cached_levels=0, fpn_ch=16)
    for read in (load_checkpoint, read_checkpoint, lambda p: init_from_checkpoint(model, p),
                 lambda p: StreamSegmenter.from_checkpoint(EngineConfig(model=str(p)))):
        with pytest.raises(CheckpointError, match=r'old model.pt: meta.classes: 11 name\(s\) for 12 output '
                                                  r"channels \(an earlier version counted CamVid's void\); name "
                                                  r'channel 11: .* \(writes old model-named.pt\)'):
            read(old)
    p = _cli('info', old)
    assert p.returncode == 2
    line, = p.stderr.strip().splitlines()
    assert ' ... ' not in line          # the CLI shows the whole command (for a path of 80 characters here)
    done = subprocess.run(_advice(line), capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert done.returncode == 0, done.stderr
    named = tmp_path / 'old model-named.pt'
    assert old.read_bytes() == before                             # the original is left as it was
    loaded, meta = load_checkpoint(named)
    assert meta['classes'] == list(CAMVID_CLASSES) + ['void'] and meta['palette'][-1] == [0, 0, 0]
    assert meta['provenance']['classes_added'] == ['void']
    raw = torch.load(old, weights_only=True)['state_dict']
    assert all(torch.equal(raw[k], v) for k, v in loaded.state_dict().items())
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(named)))
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    assert engine.classes[11] == 'void' and engine.step(frame, 0).class_ids.shape == (64, 64)
    assert _cli('info', named).returncode == 0
    init_from_checkpoint(model, named)


def test_another_data_set_s_unnamed_channels_get_numbered_names_that_work(tmp_path):
    old = _first_release(tmp_path / 'm.pt', ['floor', 'wall', 'person'], [[1, 2, 3]] * 3, 5)
    with pytest.raises(CheckpointError, match=r'm.pt: meta.classes: 3 name\(s\) for 5 output channels '
                                              r'\(an earlier version set num_classes above them\); name '
                                              r'channels 3..4: ') as e:
        read_checkpoint(old)
    done = subprocess.run(_advice(str(e.value)), capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(tmp_path / 'm-named.pt')['meta']['classes'] == ['floor', 'wall', 'person', 'class3',
                                                                           'class4']


def test_naming_takes_exactly_the_unnamed_channels(tmp_path):
    old = _first_release(tmp_path / 'old.pt', list(CAMVID_CLASSES), CAMVID_PALETTE, 12)
    for names in ([], ['void', 'more']):
        with pytest.raises(CheckpointError, match=r'old.pt: names 11 classes for 12 output channels: it needs 1 '
                                                  rf'name\(s\), got {len(names)}'):
            add_class_names(old, names)
    with pytest.raises(CheckpointError, match=r'meta.classes: expected distinct non-empty class names'):
        add_class_names(old, ['Sky'])
    assert not (tmp_path / 'old-named.pt').exists()
    whole = _first_release(tmp_path / 'whole.pt', list(CAMVID_CLASSES), CAMVID_PALETTE, 11)
    with pytest.raises(CheckpointError, match=r'whole.pt: names 11 classes for 11 output channels: it needs no names'):
        add_class_names(whole, ['void'])
    out = add_class_names(old, ['void'], tmp_path / 'o.pt', palette=[[9, 9, 9]])
    assert read_checkpoint(out)['meta']['palette'][-1] == [9, 9, 9]


def test_a_run_that_cannot_resume_under_its_own_config_says_how_to_start_from_its_weights(tmp_path):
    """A first-release CamVid run of num_classes 12: its config is refused now ('set num_classes: 11'), and with 11
    --resume said only 'resume with that config and data, or start a new run'. The refusal names its best.pt for
    init_from, and a run started so keeps every tensor but the classifier."""
    import dataclasses

    from support.tiny_models import frames

    from vidseg_ros.config import ConfigError
    from vidseg_ros.training.config import TrainConfig
    from vidseg_ros.training.loop import train
    cfg = TrainConfig(name='t', dataset='folder', arch='keyframe_fpn', arch_config={'fpn_ch': 16}, num_classes=4,
                      ignore_index=255, input_hw=[64, 64], batch_size=2, epochs=1, val_split='', hflip=False,
                      runs_dir=str(tmp_path / 'runs'))
    train(cfg, model=create_model('keyframe_fpn', num_classes=4, fpn_ch=16), train_set=frames(4, (64, 64)))
    now = dataclasses.replace(cfg, num_classes=3, epochs=2)
    with pytest.raises(ConfigError, match=r'is a run of another model \(num_classes: 4, .*start a new run .*, from '
                                          r'its weights with --set init_from=\S+/runs/t/best.pt\. ') as e:
        train(now, resume=True, model=create_model('keyframe_fpn', num_classes=3, fpn_ch=16),
              train_set=frames(4, (64, 64)))
    best = re.search(r'--set init_from=(\S+)\. ', str(e.value))[1]
    out = train(dataclasses.replace(now, name='t2', init_from=best), train_set=frames(4, (64, 64)))
    transfer = read_checkpoint(out['best_path'])['meta']['provenance']['transfer']
    assert transfer['reinitialised_names'] == ['classifier.weight', 'classifier.bias'] and transfer['kept'] > 10


def test_name_classes_given_the_wrong_number_of_names_or_no_checkpoint_is_one_line(tmp_path):
    old = _first_release(tmp_path / 'm.pt', ['floor', 'wall', 'person'], [[1, 2, 3]] * 3, 5)
    p = _cli('name-classes', old, 'only-one')
    assert p.returncode == 2 and p.stderr.count('\n') == 1 and 'Traceback' not in p.stderr, p.stderr
    assert 'names 3 classes for 5 output channels: it needs 2 name(s), got 1' in p.stderr
    p = _cli('name-classes', tmp_path / 'missing.pt', 'x')
    assert p.returncode == 2 and p.stderr.count('\n') == 1 and 'missing.pt' in p.stderr, p.stderr
    assert not (tmp_path / 'm-named.pt').exists()
