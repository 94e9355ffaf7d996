"""Class ids travel as 8-bit values (mono8 masks, the engine's uint8 argmax, 8-bit label PNGs): a 300-class
model gave id 43 for class 299 and a 16-bit label 300 became 44, in silence. At most 256 classes, ids 0..255."""
import cv2
import numpy as np
import pytest
import torch
import yaml

from vidseg_ros.config import ConfigError
from vidseg_ros.constants import MAX_CLASSES
from vidseg_ros.data.datasets.layouts import read_label_file
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, check_meta, default_meta, read_checkpoint, save_checkpoint
from vidseg_ros.training.config import TrainConfig, validate
from vidseg_ros.training.data_setup import resolve_classes

LIMIT = r'masks are mono8: at most 256 classes, ids 0\.\.255'


def _meta(n: int) -> dict:
    return default_meta('keyframe_fpn', {'num_classes': n, 'fpn_ch': 16}, classes=[f'c{i}' for i in range(n)],
                        palette=[[i % 256, 0, 0] for i in range(n)], ignore_index=None)


def test_a_model_of_more_than_256_classes_is_neither_saved_nor_read(tmp_path):
    assert MAX_CLASSES == 256
    model = create_model('keyframe_fpn', num_classes=300, fpn_ch=16)
    with pytest.raises(CheckpointError, match=rf'big\.pt \(not written\): meta\.classes: 300 classes; {LIMIT}'):
        save_checkpoint(tmp_path / 'big.pt', model, _meta(300))
    assert not (tmp_path / 'big.pt').exists()
    # a file written by an older version: every reader refuses it (check_meta also checks exported models' meta)
    torch.save({'format': 'vidseg_ros/1', 'state_dict': model.state_dict(), 'meta': _meta(300)}, tmp_path / 'old.pt')
    with pytest.raises(CheckpointError, match=rf'old\.pt: meta\.classes: 300 classes; {LIMIT}'):
        read_checkpoint(tmp_path / 'old.pt')
    with pytest.raises(CheckpointError, match=LIMIT):
        check_meta(_meta(257), 'x.onnx', num_classes=257)


def test_a_model_of_256_classes_is_saved_and_read(tmp_path):
    model = create_model('keyframe_fpn', num_classes=256, fpn_ch=16)
    read_checkpoint(save_checkpoint(tmp_path / 'ok.pt', model, _meta(256)))


def test_training_more_than_256_classes_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=rf'^num_classes: 300 classes; {LIMIT}$'):
        validate(TrainConfig(dataset='camvid', num_classes=300))
    root = tmp_path / 'data'
    root.mkdir()
    (root / 'dataset.yaml').write_text(yaml.safe_dump({'classes': [f'c{i}' for i in range(257)], 'ignore_index': 255}))
    with pytest.raises(ConfigError, match=rf'data/dataset.yaml: 257 classes; {LIMIT}$'):
        resolve_classes(TrainConfig(dataset='folder', data_root=str(root)))


@pytest.mark.parametrize('values', [[300, 5, 256], [255, 65535]])
def test_a_16_bit_label_with_values_above_255_is_refused_naming_the_file(tmp_path, values):
    path = tmp_path / 'lab16.png'
    cv2.imwrite(str(path), np.array([values], np.uint16))
    with pytest.raises(ValueError, match=rf'lab16\.png: label values \d+\.\.{max(values)} in a uint16 image; class-id '
                                         r'labels hold ids 0\.\.255'):
        read_label_file(path)


def test_a_16_bit_label_within_0_255_still_reads(tmp_path):
    path = tmp_path / 'lab16.png'
    cv2.imwrite(str(path), np.array([[0, 5, 255]], np.uint16))
    lab = read_label_file(path)
    assert lab.dtype == np.uint8 and lab.tolist() == [[0, 5, 255]]
