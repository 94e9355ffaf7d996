"""`vidseg eval` end to end against the references of test_metrics_reference: a "model" whose prediction is a known
function of each frame (the engine runs, its class ids are replaced), labels with void and ids beyond the classes;
every number of metrics.json is recomputed from the frames and label files alone, and the printed table is
metrics.json rounded."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from support.eval_data import folder_dataset, tiny_fpn
from core.test_metrics_reference import IGNORE, davis_f, davis_j, ref_confusion, ref_scores, ref_tc, ref_vc
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.tools.eval_report import summary_table
from vidseg_ros.tools.evaluate import run_evaluation
from vidseg_ros.training import metrics as M

H, W, N = 24, 32, 10


def _pred_of(rgb: np.ndarray, k: int) -> np.ndarray:
    return (rgb[..., 0].astype(np.int64) * k // 256).astype(np.uint8)      # class from the red channel


def _data(root, k: int):
    """N frames at 10 Hz of a red ramp moving right on noise; labels mostly what the "model" predicts, with
    flipped pixels, a void band and a few pixels of an id beyond the classes (7)."""
    rng = np.random.default_rng(k)
    ramp = np.tile(np.linspace(0, 255, W + 2 * N).astype(np.uint8), (H, 1))
    images, labels = [], []
    for t in range(N):
        bgr = rng.integers(0, 255, (H, W, 3), np.uint8)
        bgr[..., 2] = ramp[:, 2 * N - 2 * t:2 * N - 2 * t + W]
        label = _pred_of(bgr[..., ::-1], k)
        flip = rng.random((H, W)) < 0.15
        label[flip] = rng.integers(0, k, int(flip.sum()))
        label[:2] = IGNORE
        label[-1, :t] = 7
        images.append(bgr)
        labels.append(label)
    return folder_dataset(root, images, labels, classes=tuple('abc'[:k])), images, labels


@pytest.mark.parametrize('k', [2, 3])
def test_eval_report_equals_the_reference(tmp_path, monkeypatch, k):
    data, images, labels = _data(tmp_path / 'ds', k)
    ckpt = tiny_fpn(tmp_path / 'm.pt', classes=tuple('abc'[:k]))
    step = StreamSegmenter.step

    def known(self, rgb, *a, **kw):
        res = step(self, rgb, *a, **kw)
        res.class_ids = _pred_of(rgb, k)
        return res
    monkeypatch.setattr(StreamSegmenter, 'step', known)
    report = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'e', key_intervals=[1])
    got = json.loads((tmp_path / 'e' / 'metrics.json').read_text())['intervals']['1']

    rgbs = [im[..., ::-1] for im in images]
    preds = [_pred_of(rgb, k) for rgb in rgbs]
    gts = [np.where(g >= k, IGNORE, g) for g in labels]     # ids beyond the classes: left out, as void
    mat, missed = ref_confusion(np.stack(preds), np.stack(labels), k, IGNORE)
    ref = ref_scores(mat, missed)
    assert got['confusion'] == mat.tolist()
    assert got['all']['pixels'] == ref['pixels'] == sum(int((g < k).sum()) for g in labels)
    for key in ('mIoU', 'mAcc', 'pixel_acc'):
        assert got['all'][key] == pytest.approx(ref[key], abs=1e-12), key
    assert list(got['all']['per_class_iou'].values()) == pytest.approx(ref['iou'], abs=1e-12)
    assert got['mIoU'] == got['all']['mIoU']
    flows = [M.optical_flow(rgbs[t - 1], rgbs[t]) for t in range(1, N)]
    assert got['TC_pairs'] == N - 1 and got['TC'] == pytest.approx(ref_tc(preds, flows, k), abs=1e-12)
    assert got['mVC8_windows'] == N - 7 and got['mVC8'] == pytest.approx(ref_vc(preds, gts, 8, IGNORE), abs=1e-12)
    assert 'mVC16' not in got and got['mVC16_windows'] == 0      # 10 frames: no window of 16
    if k == 2:
        void = [g == IGNORE for g in gts]
        j = np.mean([davis_j(g == 1, p == 1, v) for g, p, v in zip(gts, preds, void)])
        f = np.mean([davis_f(g == 1, p == 1, v) for g, p, v in zip(gts, preds, void)])
        assert got['J'] == pytest.approx(j, abs=1e-12) and got['F'] == pytest.approx(f, abs=1e-12)
        assert got['J&F'] == pytest.approx((j + f) / 2, abs=1e-12)
    else:
        assert 'J&F' not in got
    # the table vidseg eval prints and the card holds: metrics.json in percent, one decimal
    row = summary_table(report).splitlines()[2].split('|')[1:-1]
    want = [got['all']['mIoU'], got['key']['mIoU'], None, got['all']['mAcc'], got['all']['pixel_acc'], got['TC'],
            got['mVC8'], got.get('J&F')]
    assert [c.strip() for c in row[1:9]] == ['-' if v is None else f'{100 * v:.1f}' for v in want]


def test_void_of_the_data_is_left_out_under_a_model_of_another_ignore_id(tmp_path, monkeypatch):
    """Labels with void 255 scored by a two-class model whose ignore id is 254, predicted exactly where labelled
    and at random in the void band: the confusion matrix left the 255s out (no class, mIoU 1.0), but J&F counted
    them as object and mVC as constant ground truth whose prediction flickers: J 0.67, F 0.52, mVC8 0.71."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for t in range(N):
        bgr = rng.integers(0, 100, (H, W, 3), np.uint8)
        bgr[8:16, 4 + t:16 + t, 2] = 255
        label = (bgr[..., 2] > 128).astype(np.uint8)
        label[:, 24:] = IGNORE
        images.append(bgr)
        labels.append(label)
    data = folder_dataset(tmp_path / 'ds', images, labels)
    ckpt = tmp_path / 'm.pt'
    tiny_fpn(ckpt)
    from vidseg_ros.models.checkpoint import load_checkpoint, save_checkpoint
    model, meta = load_checkpoint(ckpt)
    save_checkpoint(ckpt, model, {**meta, 'ignore_index': 254})
    step, flicker = StreamSegmenter.step, np.random.default_rng(1)

    def known(self, rgb, *a, **kw):
        res = step(self, rgb, *a, **kw)
        res.class_ids = (rgb[..., 0] > 128).astype(np.uint8)
        res.class_ids[:, 24:] = flicker.integers(0, 2, (H, W - 24))
        return res
    monkeypatch.setattr(StreamSegmenter, 'step', known)
    got = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'e', key_intervals=[1])['intervals']['1']
    assert got['all']['pixels'] == N * H * 24 and got['mIoU'] == 1.0
    assert (got['J'], got['F'], got['J&F'], got['mVC8']) == (1.0, 1.0, 1.0, 1.0)
