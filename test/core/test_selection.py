"""Selection split: whole drives held out of training choose the best epoch; val is scored once."""

import cv2
import numpy as np
import pytest

from support.tiny_models import TinyKeyframe, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.models.checkpoint import read_checkpoint
from vidseg_ros.training import data_setup, selection
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.loop import train, validate_frames

HW = (64, 64)


def _camvid(root):
    """CamVid layout: train with three drives (3 frames each, 1 Hz), val a 15 Hz run of 0016E5."""
    rng = np.random.default_rng(0)
    names = {'train': [f'{s}_{n:05d}' for s in ('0001TP', '0006R0', '0016E5') for n in (30, 60, 90)],
             'val': [f'0016E5_{n:05d}' for n in (101, 103)]}
    for split, stems in names.items():
        (root / split).mkdir(parents=True)
        (root / f'{split}annot').mkdir()
        for stem in stems:
            cv2.imwrite(str(root / split / f'{stem}.png'), rng.integers(0, 255, (*HW, 3), dtype=np.uint8))
            cv2.imwrite(str(root / f'{split}annot' / f'{stem}.png'), rng.integers(0, 12, HW, dtype=np.uint8))
    return root


def _cfg(root, **kw) -> TrainConfig:
    base = dict(name='t', dataset='camvid', data_root=str(root), num_classes=11, ignore_index=11,
                input_hw=list(HW), batch_size=2, epochs=1, select_split='train:0006R0')
    return TrainConfig(**{**base, **kw})


def test_a_whole_drive_is_held_out_of_training(tmp_path):
    cfg = _cfg(_camvid(tmp_path / 'cv'))
    assert {r.sequence for r in data_setup.open_split(cfg, 'train:0006R0').records} == {'0006R0'}
    assert len(data_setup.open_split(cfg, 'train:0001TP,0006R0').records) == 6
    trained = data_setup.train_dataset(cfg)
    assert len(trained) == 6 and {r.sequence for r in trained.items} == {'0001TP', '0016E5'}
    sel = data_setup.select_dataset(cfg)
    assert len(sel) == 3 and {r.sequence for r in sel.items} == {'0006R0'}
    assert not sel.train and tuple(sel[0]['image'].shape[-2:]) == HW        # whole frames, as val
    assert len(data_setup.train_dataset(_cfg(cfg.data_root, select_split=''))) == 9
    assert 'held out of training' in selection.selection_note(cfg)
    assert 'selected on what is reported' in selection.selection_note(_cfg(cfg.data_root, select_split=''))


def test_selection_split_errors(tmp_path):
    root = _camvid(tmp_path / 'cv')
    with pytest.raises(ConfigError, match='no sequence Seq05VD'):
        data_setup.open_split(_cfg(root), 'train:Seq05VD')
    with pytest.raises(ConfigError, match='shares frames with val_split'):
        data_setup.select_dataset(_cfg(root, select_split='val'))
    with pytest.raises(ConfigError, match='leaves no labelled training frames'):
        data_setup.train_dataset(_cfg(root, select_split='train:0001TP,0006R0,0016E5'))


class _Counting(list):
    """A dataset that counts the samples read (val must be read exactly once, at the end)."""
    reads = 0

    def __getitem__(self, i):
        type(self).reads += 1
        return super().__getitem__(i)


def test_best_epoch_chosen_on_selection_and_val_scored_once(tmp_path):
    val = _Counting(frames(3, HW, seed=5))
    cfg = TrainConfig(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW),
                      batch_size=2, lr=1e-2, epochs=3, hflip=False, runs_dir=str(tmp_path),
                      select_split='held-out drive', output=str(tmp_path / 'm.pt'))
    out = train(cfg, model=TinyKeyframe(), train_set=frames(6, HW), val_set=val,
                select_set=frames(4, HW, seed=9))
    assert _Counting.reads == 3                               # once, after training
    hist = out['history']
    assert all('select_mIoU' in r and 'mIoU' not in r for r in hist)
    assert out['best_mIoU'] == max(r['select_mIoU'] for r in hist)
    meta = read_checkpoint(tmp_path / 'm.pt')['meta']
    assert meta['metrics']['select_mIoU'] == out['best_mIoU']
    assert meta['metrics']['val_mIoU'] == out['val']['mIoU']
    assert 'held-out drive' in meta['provenance']['selection']
    # the stored val score is that of the stored (best) weights
    model = TinyKeyframe()
    model.load_state_dict(read_checkpoint(tmp_path / 't' / 'best.pt')['state_dict'])
    assert validate_frames(model, frames(3, HW, seed=5), cfg, 'cpu')['mIoU'] == pytest.approx(out['val']['mIoU'])
