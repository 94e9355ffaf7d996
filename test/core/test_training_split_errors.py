"""A split that cannot be opened is named by the setting that asked for it: train_split, val_split and
temporal_split may all read the same folder, and the error said only 'd: no sequence nosuchseq; it has s'."""
import numpy as np
import pytest

from support.eval_data import folder_dataset

from vidseg_ros.config import ConfigError
from vidseg_ros.training import data_setup
from vidseg_ros.training.config import TrainConfig


@pytest.fixture
def drive(tmp_path):
    """One sequence 's' of 6 labelled 64x64 frames."""
    rng = np.random.default_rng(0)
    return folder_dataset(tmp_path / 'd', [rng.integers(0, 255, (64, 64, 3), np.uint8) for _ in range(6)],
                          [np.zeros((64, 64), np.uint8)] * 6)


def _cfg(root, **kw) -> TrainConfig:
    return TrainConfig(**{'dataset': 'folder', 'data_root': str(root), 'train_split': 'all', 'val_split': '',
                          'num_classes': 2, 'ignore_index': 255, 'input_hw': [64, 64], **kw})


@pytest.mark.parametrize('setting,build', [('train_split', data_setup.train_dataset),
                                           ('val_split', data_setup.val_dataset),
                                           ('temporal_split', data_setup.temporal_dataset)])
def test_an_unknown_sequence_names_the_setting(drive, setting, build):
    cfg = _cfg(drive, mode='sequence', temporal_weight=0.5, temporal_data=str(drive), **{setting: 'nosuchseq'})
    with pytest.raises(ConfigError, match=rf'^{setting}: .*d: no sequence nosuchseq; it has s$'):
        build(cfg)


def test_temporal_data_without_a_clip_of_seq_len_names_the_setting(drive):
    """The labelled set's clips are synthesised where frames are missing; the temporal loss's must be real."""
    cfg = _cfg(drive, mode='sequence', seq_len=9, temporal_weight=0.5, temporal_data=str(drive))
    assert len(data_setup.train_dataset(cfg)) == 6
    with pytest.raises(ConfigError, match=r'^temporal_data: .*d: no sequence has 9 consecutive frames \(seq_len\)$'):
        data_setup.temporal_dataset(cfg)
