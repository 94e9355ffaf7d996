"""`vidseg train` on settings and labels nobody chose: number settings outside what makes sense (lr .inf, a negative
weight decay, jitter 5, scale_range [1, .inf]) and labels of one class, or without some named classes, or an
ignore_index that is a class too. Each ran to torch's words, an OverflowError, or a model written as trained in
silence."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vidseg_ros.config import ConfigError
from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
from vidseg_ros.training import class_presence, data_setup
from vidseg_ros.training.config import load_train_config
from vidseg_ros.training.loop import train


def _data(root: Path, labels: list[np.ndarray], classes: list[str], ignore: int = 255) -> Path:
    """A folder dataset of one sequence 'a', one 64x64 frame per label."""
    rng = np.random.default_rng(0)
    (root / 'images' / 'a').mkdir(parents=True)
    (root / 'labels' / 'a').mkdir(parents=True)
    records = []
    for i, label in enumerate(labels):
        image, path = root / 'images' / 'a' / f'{i}.png', root / 'labels' / 'a' / f'{i}.png'
        cv2.imwrite(str(image), rng.integers(0, 255, (64, 64, 3), np.uint8))
        cv2.imwrite(str(path), label)
        records.append(FrameRecord('a', i, image, path, i, 'human'))
    write_index(root, records)
    (root / 'dataset.yaml').write_text(yaml.safe_dump({'classes': classes, 'ignore_index': ignore}))
    return root


def _config(tmp_path: Path, **kw):
    return load_train_config(overrides={
        'name': 't', 'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 16}, 'dataset': 'folder',
        'data_root': str(tmp_path / 'd'), 'train_split': 'all', 'val_split': '', 'input_hw': [64, 64],
        'batch_size': 2, 'epochs': 1, 'num_threads': 1, 'device': 'cpu', 'hflip': False, 'scale_range': [1, 1],
        'runs_dir': str(tmp_path / 'runs'), **kw})


def _halves(left: int = 0, right: int = 1) -> np.ndarray:
    label = np.full((64, 64), left, np.uint8)
    label[:, 32:] = right
    return label


def _warnings(caplog) -> str:
    return ' '.join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize('key, value, says', [
    ('lr', float('inf'), r'lr: inf must be finite \(Peak learning rate\)'),       # diverged at step 2
    ('lr', -1.0, r'lr: -1.0 must be 0 or more'),                                  # torch: 'Invalid learning rate'
    ('weight_decay', -1.0, r'weight_decay: -1.0 must be 0 or more'),              # torch: 'Invalid weight_decay value'
    ('scale_range', [1.0, float('inf')], r'scale_range: \[1.0, inf\] must be finite'),   # OverflowError, exit 1
    ('jitter', 5.0, r'jitter: 5.0 must be 0..1 \(Brightness'),                    # brightness factors down to -4
    ('hue_jitter', -3.0, r'hue_jitter: -3.0 must be 0..0.5'),
    ('blur_prob', 7.0, r'blur_prob: 7.0 must be 0..1'),
    ('noise_std', -1.0, r'noise_std: -1.0 must be 0..255'),
    ('feature_weight', -1.0, r'feature_weight: -1.0 must be 0 or more'),         # pushed the features apart
])
def test_number_settings_outside_their_sense_are_refused(tmp_path, key, value, says):
    with pytest.raises(ConfigError, match=says):
        _config(tmp_path, **{key: value})


def test_lr_0_trains_with_a_warning(tmp_path, caplog):
    """lr 0 is taken (BatchNorm statistics still follow the data) but no longer in silence."""
    _data(tmp_path / 'd', [_halves()] * 2, ['bg', 'obj'])
    with caplog.at_level(logging.WARNING):
        train(_config(tmp_path, lr=0.0))
    assert 'lr 0: the weights will not change; only BatchNorm statistics follow the training data' in _warnings(caplog)


def test_labels_of_one_class_are_warned_about(tmp_path, caplog):
    """classes [bg, obj], every label all bg: a model that predicts bg everywhere, val mIoU 1.0, in silence."""
    _data(tmp_path / 'd', [np.zeros((64, 64), np.uint8)] * 2, ['bg', 'obj'])
    with caplog.at_level(logging.WARNING):
        train(_config(tmp_path))
    assert "the training labels hold one class only (0 'bg' of 2): the model learns to predict it on every pixel " \
           "(loss towards 0, mIoU 1 on data like it)" in _warnings(caplog)


def test_a_class_the_first_batches_missed_is_looked_for_in_the_label_files(tmp_path, caplog, monkeypatch):
    """One step of one sample in the first epoch saw only bg; the files hold obj too: no one-class warning."""
    looked = []
    in_files = class_presence.classes_in_label_files
    monkeypatch.setattr(class_presence, 'classes_in_label_files',
                        lambda *a: looked.append(in_files(*a).tolist()) or np.array(looked[-1]))
    _data(tmp_path / 'd', [np.zeros((64, 64), np.uint8)] * 7 + [_halves()], ['bg', 'obj'])
    with caplog.at_level(logging.WARNING):
        train(_config(tmp_path, batch_size=1, steps_per_epoch=1, seed=1))
    assert looked == [[0, 1]] and 'one class only' not in _warnings(caplog)


def test_classes_that_never_occur_are_named(tmp_path, caplog):
    _data(tmp_path / 'd', [_halves()] * 2, [f'c{i}' for i in range(5)])
    with caplog.at_level(logging.WARNING):
        train(_config(tmp_path))
    assert "3 of 5 classes never occurred in the training labels of the first epoch (as cropped and augmented): " \
           "'c2', 'c3', 'c4'; the model cannot learn them" in _warnings(caplog)


@pytest.mark.parametrize('classes, ignore, says', [
    (['unlabelled', 'road', 'car'], 0, "ignore_index 0 is also class 0 'unlabelled' of the 3"),
    ([f'c{i}' for i in range(256)], 255, "ignore_index 255 is also class 255 'c255' of the 256"),
])
def test_an_ignore_index_that_is_a_class_is_warned_about(tmp_path, caplog, classes, ignore, says):
    """Class 255 of 256 (or a class 0 'unlabelled' marked ignore) had an output channel nothing ever trained."""
    _data(tmp_path / 'd', [_halves(1, 2)], classes, ignore)
    with caplog.at_level(logging.WARNING):
        data_setup.resolve_classes(_config(tmp_path))
    assert says + ': its pixels are left out of the loss and the scores, so the model never learns it' in \
        _warnings(caplog)


def test_frames_of_another_size_are_fitted_to_input_hw_each(tmp_path):
    """The resize scale was the first frame's for every frame: after a 64x64 frame (scale 1 for input_hw 64x64), a
    192x384 one was validated on a 64x64 crop of its centre sixth at three times the engine's scale (its outer
    bands of class 1 never seen). Each frame now covers input_hw itself, as the engine fits every frame."""
    from vidseg_ros.training.datasets import FrameDataset
    wide = np.zeros((192, 384), np.uint8)
    wide[:, :116], wide[:, -116:] = 1, 1          # class 1 on the outer 30% of each side
    root = _data(tmp_path / 'd', [_halves()], ['bg', 'obj'])
    cv2.imwrite(str(root / 'images' / 'a' / '1.png'), np.zeros((192, 384, 3), np.uint8))
    cv2.imwrite(str(root / 'labels' / 'a' / '1.png'), wide)
    write_index(root, [FrameRecord('a', i, root / 'images' / 'a' / f'{i}.png', root / 'labels' / 'a' / f'{i}.png', i,
                                   'human') for i in range(2)])
    cfg = data_setup.resolve_classes(_config(tmp_path, val_split='all'))
    src = data_setup.open_split(cfg, 'all')
    val = FrameDataset(src, data_setup.augment_config(cfg, src, train=False), train=False)
    label = val[1]['label'].numpy()                 # 192x384 covering 64x64: 64x128, centre crop 64x64
    assert label.shape == (64, 64)
    assert (label[:, :6] == 1).all() and (label[:, 8:56] == 0).all() and (label[:, 58:] == 1).all()
