"""`vidseg eval` on labels holding ids the model has no class for (labels 0..19 scored by an 11-class model, a stray
200 that is not the ignore id): those pixels were left out of every score in silence. Now one warning says how many
pixels of which ids, and metrics.json records it; the count is training's (label_ids.IdsBeyondIgnored)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from support.eval_data import folder_dataset, noise_images, tiny_fpn
from vidseg_ros.tools.evaluate import run_evaluation

H, W = 64, 96


def _model(path: Path, classes: int, cached_levels: int = 0) -> Path:
    return tiny_fpn(path, [f'c{i}' for i in range(classes)], cached_levels, input_hw=(H, W))


def _data(root: Path, labels: list[np.ndarray], classes: list[str] | None) -> Path:
    """A folder dataset: one sequence, a frame every 0.1 s, one label each."""
    return folder_dataset(root, noise_images(labels, (H, W)), labels, classes=classes)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and 'hold ids' in r.getMessage()]


def test_labels_numbered_beyond_the_model_classes_are_counted_and_said_once(tmp_path, caplog):
    """Labels 0..19 (a 20-class numbering) scored by an 11-class key-frame model at two key intervals: the ids
    11..19 are counted once per label file (not once per interval), said in one warning, and kept in metrics.json."""
    label = np.arange(H * W, dtype=np.int64).reshape(H, W) % 20
    data = _data(tmp_path / 'd', [label.astype(np.uint8)] * 3, None)
    with caplog.at_level(logging.WARNING):
        report = run_evaluation(_model(tmp_path / 'm.pt', 11, cached_levels=2), data, split='all',
                                out_dir=tmp_path / 'ev', key_intervals=[1, 2], write_card=False)
    assert set(report['intervals']) == {'1', '2'}
    per_file = {v: int((label == v).sum()) for v in range(11, 20)}
    pixels = 3 * sum(per_file.values())
    line, = _warnings(caplog)
    assert line.startswith(f'{pixels} label pixels (45.0% of the labelled pixels) in 3 of 3 label files hold ids '
                           '11, 12, 13, 14, 15, 16, 17, 18, 19: beyond the 11 classes (0..10) and not the ignore '
                           'id 255; they were left out of mIoU, mAcc and pixel accuracy'), line
    assert "are the labels numbered as the model's classes?" in line
    saved = json.loads((tmp_path / 'ev' / 'metrics.json').read_text())['label_ids_beyond_classes']
    assert saved['pixels'] == pixels and saved['label_files'] == 3 and saved['label_files_read'] == 3
    assert saved['ids'] == {str(v): 3 * n for v, n in per_file.items()}
    assert saved['first'] == str(data / 'labels' / 's' / '0.png')


def test_a_stray_id_in_a_dataset_naming_the_model_classes_is_said(tmp_path, caplog):
    """A dataset naming the model's 11 classes whose masks hold 200 (not its ignore 255): read as ignore in
    silence. 255 itself is no such id."""
    label = np.zeros((H, W), np.uint8)
    label[:8], label[8:16], label[16:24] = 200, 255, 3
    data = _data(tmp_path / 'd', [label, label], [f'c{i}' for i in range(11)])
    with caplog.at_level(logging.WARNING):
        run_evaluation(_model(tmp_path / 'm.pt', 11), data, split='all', out_dir=tmp_path / 'ev', write_card=False)
    line, = _warnings(caplog)
    assert line.startswith(f'{2 * 8 * W} label pixels (') and ' in 2 of 2 label files hold ids 200: ' in line
    assert line.endswith('name that class in dataset.yaml classes, or re-import the labels with vidseg '
                         'label-import --map FROM:TO'), line
    saved = json.loads((tmp_path / 'ev' / 'metrics.json').read_text())['label_ids_beyond_classes']
    assert saved['ids'] == {'200': 2 * 8 * W}


def test_labels_within_the_classes_are_no_warning(tmp_path, caplog):
    label = np.zeros((H, W), np.uint8)
    label[:, :10], label[:, 10:20] = 1, 255
    data = _data(tmp_path / 'd', [label, label], None)
    with caplog.at_level(logging.WARNING):
        run_evaluation(_model(tmp_path / 'm.pt', 2), data, split='all', out_dir=tmp_path / 'ev', write_card=False)
    assert not _warnings(caplog)
    saved = json.loads((tmp_path / 'ev' / 'metrics.json').read_text())['label_ids_beyond_classes']
    assert saved['pixels'] == 0 and saved['label_files_read'] == 2 and saved['ids'] == {}
