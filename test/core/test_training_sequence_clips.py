"""Recurrent training (mode: sequence) on labelled frames without their video (CamVid train, 1 Hz): each clip is
its labelled frame, unchanged at ``label_pos`` with its label, among copies moved by synthetic camera motion that
accumulates away from it (at most ``shift_px_per_frame`` per axis and frame), labelled ignore."""
import cv2
import numpy as np
import torch

from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
from vidseg_ros.training import data_setup
from vidseg_ros.training.config import TrainConfig

SHIFT = 4.0


def _isolated_frames(root):
    """Labelled frames 0, 10 and 20 of one sequence (blurred noise, left half class 0, right half 1), no others."""
    (root / 'images' / 's').mkdir(parents=True)
    (root / 'labels' / 's').mkdir(parents=True)
    rng, records = np.random.default_rng(0), []
    for i in (0, 10, 20):
        image, label = root / 'images' / 's' / f'{i}.png', root / 'labels' / 's' / f'{i}.png'
        cv2.imwrite(str(image), cv2.GaussianBlur(rng.integers(0, 255, (64, 96, 3), np.uint8), (0, 0), 2))
        cv2.imwrite(str(label), np.where(np.arange(96)[None, :] < 48, 0, 1).repeat(64, 0).astype(np.uint8))
        records.append(FrameRecord('s', i, image, label, i * 10 ** 8, 'human'))
    write_index(root, records)
    write_meta(root, {'classes': ['a', 'b'], 'ignore_index': 255})
    return root, records


def _best_shift(a: torch.Tensor, b: torch.Tensor, reach: int) -> tuple[int, int]:
    """The whole-pixel (dx, dy) within ``reach`` that best maps ``a``'s inner part onto ``b``'s (least squares)."""
    m = reach + 2
    inner = b[:, m:-m, m:-m]
    errs = {(dx, dy): float((a[:, m - dy:a.shape[1] - m - dy, m - dx:a.shape[2] - m - dx] - inner).square().mean())
            for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1)}
    return min(errs, key=errs.get)


def test_clips_around_a_lone_labelled_frame_are_synthesised(tmp_path):
    root, records = _isolated_frames(tmp_path / 'd')
    cfg = TrainConfig(mode='sequence', arch='recurrent_unet', dataset='folder', data_root=str(root), train_split='all',
                      val_split='', num_classes=2, ignore_index=255, input_hw=[64, 96], hflip=False,
                      scale_range=[1.0, 1.0], jitter=0.0, seq_len=5, shift_px_per_frame=SHIFT)
    ds = data_setup.train_dataset(cfg)
    for i, rec in enumerate(records):
        clip = ds[i]
        t, frames, labels = clip['label_pos'], clip['frames'], clip['labels']
        real = torch.from_numpy(cv2.cvtColor(cv2.imread(str(rec.image)), cv2.COLOR_BGR2RGB)).permute(2, 0, 1) / 255
        assert clip['synthetic'] and frames.shape == (5, 3, 64, 96)
        assert torch.allclose(frames[t], real, atol=1 / 255)
        assert labels[t].unique().tolist() == [0, 1]
        for k in range(5):
            if k == t:
                continue
            assert labels[k].unique().tolist() == [255]
            dx, dy = _best_shift(frames[t], frames[k], reach=round((SHIFT + 1) * abs(k - t)))
            assert 0 < max(abs(dx), abs(dy)) <= (SHIFT + 0.5) * abs(k - t)
