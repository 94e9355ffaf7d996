"""`vidseg finetune` on labels and checkpoints nobody chose: a label without a labelled pixel or of one class (a model
that predicts that class everywhere was written and used, exit 0), a checkpoint without input_hw or with a tiny one
(torch's AssertionError / BatchNorm's 'Expected more than 1 value per channel'), and whole 12 MP frames as crops."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, load_checkpoint, save_checkpoint
from vidseg_ros.tools.finetune import one_shot
from vidseg_ros.training import augment


def _checkpoint(tmp_path, classes: int, input_hw):
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=classes, cached_levels=0, fpn_ch=16)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=[f'c{i}' for i in range(classes)],
                        palette=[[i, i, i] for i in range(classes)], ignore_index=255, input_hw=input_hw)
    return save_checkpoint(tmp_path / 'm.pt', model, meta)


def _run(tmp_path, ckpt, mask: np.ndarray, steps: int = 1):
    """Fine-tune on frame 0 of a 2-frame sequence of ``mask``'s size."""
    rng = np.random.default_rng(0)
    (tmp_path / 'seq').mkdir(exist_ok=True)
    for t in range(2):
        cv2.imwrite(str(tmp_path / 'seq' / f'{t:05d}.png'), rng.integers(0, 255, (*mask.shape, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'mask.png'), mask)
    return one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
                    steps=steps, progress=False)


def _square(value: int, background: int = 0, hw=(64, 96)) -> np.ndarray:
    mask = np.full(hw, background, np.uint8)
    mask[hw[0] // 4:hw[0] * 3 // 4, hw[1] // 4:hw[1] * 3 // 4] = value
    return mask


def test_a_label_without_a_labelled_pixel_is_refused(tmp_path):
    """All 255 on an 11-class model was read as a 0/255 object mask: 'object' on every pixel, a fresh two-class head
    trained to it and the sequence labelled all object, exit 0."""
    with pytest.raises(ValueError, match=r'mask.png has no labelled pixel \(every pixel is the ignore value 255\)'):
        _run(tmp_path, _checkpoint(tmp_path, 11, [64, 96]), np.full((64, 96), 255, np.uint8))
    assert not (tmp_path / 'ft').exists()


@pytest.mark.parametrize('classes, mask, says', [
    (11, np.zeros((64, 96), np.uint8), r"holds only class 0 \('c0'\)"),
    (11, _square(3, background=3), r"holds only class 3 \('c3'\)"),
    (11, _square(255, background=3), r"holds only class 3 \('c3'\)"),        # the rest is ignore
    (2, np.zeros((64, 96), np.uint8), r'holds no object \(every labelled pixel is 0\)'),
])
def test_a_label_of_one_class_is_refused(tmp_path, classes, mask, says):
    """30 steps on an all-3 label turned 81% of the sequence's pixels into class 3, on an all-0 object mask 99% into
    background; both were written, exit 0."""
    with pytest.raises(ValueError, match=says + ': fine-tuning on it teaches the model to predict that on every '
                                                'pixel; label at least two classes'):
        _run(tmp_path, _checkpoint(tmp_path, classes, [64, 96]), mask)
    assert not (tmp_path / 'ft').exists()


@pytest.mark.parametrize('input_hw, frame_hw', [([], (20, 30)), ([32, 32], (64, 96)), ([8, 8], (64, 96))])
def test_a_checkpoint_without_or_with_a_tiny_input_hw_fine_tunes(tmp_path, input_hw, frame_hw):
    """No input_hw and a 20x30 frame: crop 0x0, AssertionError in augment (exit 1, 'internal error'); input_hw 32x32:
    a 32x32 crop, BatchNorm's 'Expected more than 1 value per channel ... Size([1, 256, 1, 1])'; 8x8: AssertionError.
    Crops are now whole strides, two at least, padded with ignore."""
    result = _run(tmp_path, _checkpoint(tmp_path, 3, input_hw), _square(1, hw=frame_hw))
    assert np.isfinite(result['loss_last'])
    mask = cv2.imread(str(tmp_path / 'ft' / '00001.png'), cv2.IMREAD_UNCHANGED)
    assert mask.shape == frame_hw and load_checkpoint(tmp_path / 'ft' / 'finetuned.pt')[1]['input_hw'] == input_hw


def test_crops_of_a_checkpoint_without_input_hw_are_bounded(tmp_path, monkeypatch):
    """Without input_hw every step trained on the whole frame: a 4000x3000 frame took 4.2 GB and 48 s for one step
    (100 by default). Crops are at most 512 a side now (the frame at its own scale, as the engine runs it)."""
    drawn = []
    draw = augment.draw

    def recording(cfg, *a, **kw):
        drawn.append((list(cfg.crop_hw), cfg.resize_scale))
        return draw(cfg, *a, **kw)
    monkeypatch.setattr(augment, 'draw', recording)
    _run(tmp_path, _checkpoint(tmp_path, 3, []), _square(1, hw=(64, 700)))
    assert drawn == [([64, 512], 1.0)]


def test_a_rerun_into_an_out_dir_of_another_sequence_is_refused(tmp_path):
    """A 3-frame rerun into the out dir of a 5-frame run left masks 00003 and 00004 of the first model among the new
    ones, exit 0: the folder looked like one 5-frame result."""
    ckpt = _checkpoint(tmp_path, 3, [64, 96])
    _run(tmp_path, ckpt, _square(1))
    (tmp_path / 'seq' / '00001.png').rename(tmp_path / 'seq' / 'other.png')
    before = {p.name: p.read_bytes() for p in (tmp_path / 'ft').iterdir()}
    with pytest.raises(ValueError, match=r"ft holds 1 PNG file\(s\) that are not masks of this sequence "
                                         r"\(00001.png\): an earlier run's masks would be left among this one's; "
                                         r"give a new --out-dir"):
        one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
                 steps=1, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / 'ft').iterdir()} == before


def test_finetune_json_is_written_last(tmp_path, monkeypatch):
    """Nothing told a finished out dir from one a Ctrl-C left while labelling (finetuned.pt and some masks, exit 130).
    finetune.json (settings and result) is written when every mask is; a run that stops removes an earlier one's."""
    import json

    from vidseg_ros.tools import finetune
    ckpt = _checkpoint(tmp_path, 3, [64, 96])
    result = _run(tmp_path, ckpt, _square(1))
    saved = json.loads((tmp_path / 'ft' / 'finetune.json').read_text())
    assert saved['frames'] == 2 and saved['loss_last'] == result['loss_last'] and saved['steps'] == 1
    write = finetune.write_image_atomic

    def interrupted_at_the_second_mask(path, *a, **kw):
        if path.name == '00001.png':
            raise KeyboardInterrupt
        return write(path, *a, **kw)
    monkeypatch.setattr(finetune, 'write_image_atomic', interrupted_at_the_second_mask)
    with pytest.raises(KeyboardInterrupt):
        one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
                 steps=1, progress=False)
    assert not (tmp_path / 'ft' / 'finetune.json').exists() and (tmp_path / 'ft' / 'finetuned.pt').exists()


def _with_labels_dir(tmp_path, gt: np.ndarray):
    ckpt = _checkpoint(tmp_path, 3, [64, 96])
    (tmp_path / 'gt').mkdir()
    for t in range(2):
        cv2.imwrite(str(tmp_path / 'gt' / f'{t:05d}.png'), gt)
    rng = np.random.default_rng(0)
    (tmp_path / 'seq').mkdir()
    for t in range(2):
        cv2.imwrite(str(tmp_path / 'seq' / f'{t:05d}.png'), rng.integers(0, 255, (64, 96, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'mask.png'), _square(1))
    return one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
                    steps=1, labels_dir=tmp_path / 'gt', progress=False)


def test_a_labels_dir_label_of_another_size_is_refused_before_training(tmp_path):
    """It stopped after training and the first masks with 'prediction and ground truth sizes differ: (6144,) vs
    (3072,)', naming no file."""
    with pytest.raises(ValueError, match=r'gt/00000.png is 96x32 but its frame .*seq/00000.png is 96x64 \(as '
                                         r"displayed\); --labels-dir labels must have their frame's size"):
        _with_labels_dir(tmp_path, _square(1)[:32])
    assert not (tmp_path / 'ft').exists()


def test_labels_dir_ids_beyond_the_model_classes_are_said(tmp_path, caplog):
    """--labels-dir labels holding 7 on a 3-class model: those pixels were left out of mIoU in silence. They are
    counted and said as vidseg eval says them (label_ids.beyond_summary / beyond_text; finetune worded its own
    line and counted pixels and ids only)."""
    import logging
    with caplog.at_level(logging.WARNING):
        result = _with_labels_dir(tmp_path, _square(7))
    n, first = int((_square(7) == 7).sum()) * 2, str(tmp_path / 'gt' / '00000.png')
    share = n / (2 * 64 * 96)
    assert result['label_ids_beyond_classes'] == {'pixels': n, 'ids': {7: n}, 'label_files': 2,
                                                  'label_files_read': 2, 'first': first, 'share': share}
    assert f'{n} label pixels ({share:.1%} of the labelled pixels) in 2 of 2 label files hold ids 7: beyond the 3 ' \
           f'classes (0..2) and not the ignore id 255; they were left out of mIoU (first: {first}); are the ' \
           "--labels-dir labels numbered as the model's classes?" in caplog.text


def test_hidden_files_in_the_sequence_are_not_frames(tmp_path):
    """A macOS ``._00001.png`` beside each frame (copied from a Mac to a USB disk) was taken for a frame and failed
    the run as unreadable; the sequence is now listed as the video source lists a folder."""
    ckpt = _checkpoint(tmp_path, 3, [32, 32])
    (tmp_path / 'seq').mkdir()
    (tmp_path / 'seq' / '._00001.png').write_bytes(b'\x00\x05\x16\x07 Mac OS X resource fork')
    result = _run(tmp_path, ckpt, _square(1))
    assert np.isfinite(result['loss_last'])
    assert sorted(p.name for p in (tmp_path / 'ft').glob('*.png')) == ['00000.png', '00001.png']
