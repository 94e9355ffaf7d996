"""`vidseg train` on degenerate user datasets: one class, label ids beyond the named classes, and a batch of one
32x32 crop. Each ran to a misleading end (a 'perfect' model, a class gone in silence, torch's tensor sizes)."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vidseg_ros.config import ConfigError
from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
from vidseg_ros.training import label_ids
from vidseg_ros.training.config import load_train_config
from vidseg_ros.training.loop import train


def _data(root: Path, labels: list[np.ndarray], classes: list[str]) -> Path:
    """A folder dataset: sequence 'a' for training, 'b' for validation, one 48x64 frame per label."""
    rng = np.random.default_rng(0)
    records = []
    for seq, label in zip('ab', labels):
        (root / 'images' / seq).mkdir(parents=True)
        (root / 'labels' / seq).mkdir(parents=True)
        image, path = root / 'images' / seq / '0.png', root / 'labels' / seq / '0.png'
        cv2.imwrite(str(image), rng.integers(0, 255, (48, 64, 3), np.uint8))
        cv2.imwrite(str(path), label)
        records.append(FrameRecord(seq, 0, image, path, len(records), 'human'))
    write_index(root, records)
    (root / 'dataset.yaml').write_text(yaml.safe_dump({'classes': classes, 'ignore_index': 255}))
    return root


def _config(tmp_path: Path, hw=(64, 64), **kw):
    return load_train_config(overrides={
        'name': 't', 'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 16}, 'dataset': 'folder',
        'data_root': str(tmp_path / 'd'), 'train_split': 'a', 'val_split': 'b', 'input_hw': list(hw),
        'batch_size': 1, 'epochs': 1, 'num_threads': 1, 'device': 'cpu', 'hflip': False,
        'runs_dir': str(tmp_path / 'runs'), **kw})


def _halves() -> np.ndarray:
    label = np.zeros((48, 64), np.uint8)
    label[:, 32:] = 1
    return label


def test_one_class_is_refused_not_trained_to_a_perfect_score(tmp_path):
    """classes: [obj] over 0/1 masks: the 1s were ignore, the model predicted 'obj' everywhere, loss 0.0 and
    val mIoU 1.0, and it was written as trained."""
    _data(tmp_path / 'd', [_halves(), _halves()], ['obj'])
    with pytest.raises(ConfigError, match=r'dataset.yaml: 1 class: a model of one class predicts it for every '
                                          r'pixel .* e\.g\. \[background, object\]'):
        train(_config(tmp_path))
    with pytest.raises(ConfigError, match='num_classes: 1 class'):
        train(_config(tmp_path, num_classes=1))
    assert not (tmp_path / 'runs' / 't' / 'best.pt').exists()


def test_an_id_beyond_the_named_classes_is_warned_about(tmp_path, caplog, monkeypatch):
    """A dataset naming [bg, obj] whose masks also hold 2 (a third class painted after label-import): the 2s were
    ignored in silence; only a dataset naming no classes was warned about."""
    monkeypatch.setattr(label_ids, '_warned_ids', set())
    label = _halves()
    label[:10] = 2
    _data(tmp_path / 'd', [label, _halves()], ['bg', 'obj'])
    with caplog.at_level(logging.WARNING):
        train(_config(tmp_path))
    text = ' '.join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "labels/a/0.png: label id 2 >= num_classes 2" in text
    assert "dataset.yaml names 2: 'bg', 'obj'); ids from 2 up are ignored (as ignore_index 255); name that " \
           "class in dataset.yaml classes" in text


def test_a_batch_of_one_32x32_crop_names_the_settings(tmp_path):
    """batch_size 1 and input_hw [32, 32] (both legal): torch's 'Expected more than 1 value per channel when
    training, got input size torch.Size([1, 256, 1, 1])' was all the user read."""
    _data(tmp_path / 'd', [_halves(), _halves()], ['bg', 'obj'])
    with pytest.raises(ConfigError, match=r'batch_size 1 with a 32x32 training crop leaves one value per channel '
                                          r'.* raise batch_size to 2 or crop_hw \(input_hw\) to \[64, 64\]'):
        train(_config(tmp_path, hw=(32, 32)))
