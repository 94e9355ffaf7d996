"""Metrics against values computed by hand on crafted masks."""
import math

import numpy as np
import pytest

from vidseg_ros.training import metrics as M


def test_confusion_scores_by_hand():
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 9, 9]])          # 9 = ignore
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 2],
                     [2, 0, 0, 0]])
    cm = M.ConfusionMatrix(3, ignore_index=9)
    cm.update(pred, gt)
    # class 0: TP 3, FN 1 (->1), FP 1 (gt 2 -> 0)  IoU 3/5
    # class 1: TP 3, FN 1 (->2), FP 1 (gt 0 -> 1)  IoU 3/5
    # class 2: TP 1, FN 1 (->0), FP 1 (gt 1 -> 2)  IoU 1/3
    s = cm.scores(['a', 'b', 'c'])
    assert s['per_class_iou'] == pytest.approx({'a': 0.6, 'b': 0.6, 'c': 1 / 3})
    assert s['mIoU'] == pytest.approx((0.6 + 0.6 + 1 / 3) / 3)
    assert s['per_class_acc'] == pytest.approx({'a': 0.75, 'b': 0.75, 'c': 0.5})
    assert s['mAcc'] == pytest.approx((0.75 + 0.75 + 0.5) / 3)
    assert s['pixel_acc'] == pytest.approx(7 / 10)
    assert s['pixels'] == 10


def test_absent_class_is_nan_and_skipped():
    cm = M.ConfusionMatrix(3)
    cm.update(np.zeros((2, 2), int), np.zeros((2, 2), int))
    s = cm.scores()
    assert s['mIoU'] == 1.0 and s['per_class_iou']['1'] is None


def test_out_of_range_prediction_counts_as_miss():
    cm = M.ConfusionMatrix(2)
    cm.update(np.array([0, 5]), np.array([0, 1]))
    s = cm.scores()
    assert s['per_class_acc']['1'] == 0.0 and s['pixel_acc'] == 0.5


def test_j_region_iou():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True                     # 16 px
    pred = np.zeros_like(gt)
    pred[4:8, 2:6] = True                   # 16 px, overlap 8
    assert M.db_eval_iou(gt, pred) == pytest.approx(8 / 24)
    assert M.db_eval_iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_boundary_map_is_one_pixel_ring():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    b = M.seg2bmap(m)    # DAVIS: pixels whose right, bottom or bottom-right neighbour differs: rows/cols 0 and 5
    assert b.sum() == 20 and not b[1:5, 1:5].any() and b[0, :6].all() and b[:6, 5].all()


def test_f_contour_accuracy_by_hand():
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True                   # boundary ring: 36 px
    assert M.db_eval_boundary(gt, gt, bound_th=1) == 1.0
    shifted = np.roll(gt, 1, axis=1)        # one column right
    assert M.db_eval_boundary(gt, shifted, bound_th=1) == 1.0       # within 1 px tolerance
    # Shift by 3 columns, tolerance 1 px (3x3 cross): of the 36 predicted boundary pixels the top
    # and bottom rows match at columns 8..15 (8 + 8) and the left column at rows 6 and 13 (2):
    # precision 18/36; recall is the same by symmetry, so F = 0.5.
    far = np.roll(gt, 3, axis=1)
    assert M.db_eval_boundary(gt, far, bound_th=1) == pytest.approx(0.5)
    assert M.db_eval_boundary(gt, np.zeros_like(gt)) == 0.0


def test_j_and_f_mean():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 255
    out = M.j_and_f([gt, gt], [gt, np.zeros_like(gt)])
    assert out['J'] == pytest.approx(0.5) and out['F'] == pytest.approx(0.5)
    assert out['J&F'] == pytest.approx(0.5)


def test_warp_mask_shifts_by_flow():
    mask = np.zeros((6, 6), np.uint8)
    mask[2, 2] = 1
    flow = np.zeros((6, 6, 2), np.float32)
    flow[..., 0] = -1.0                     # out[y, x] = mask[y, x - 1]: moves right by one
    out = M.warp_mask(mask, flow)
    assert out[2, 3] == 1 and out.sum() == 1


def test_temporal_consistency_by_hand():
    a = np.zeros((4, 4), np.uint8)
    a[:, :2] = 1
    b = np.zeros((4, 4), np.uint8)
    b[:, :1] = 1
    zero = np.zeros((4, 4, 2), np.float32)
    # class 1: inter 4, union 8 -> 0.5; class 0: inter 8, union 12 -> 2/3
    tc = M.temporal_consistency([a, b], None, 2, flows=[zero])
    assert tc == pytest.approx((0.5 + 2 / 3) / 2)
    assert M.temporal_consistency([a, a, a], None, 2, flows=[zero, zero]) == 1.0
    assert math.isnan(M.temporal_consistency([a], None, 2))


def test_temporal_consistency_uses_flow():
    # A bright square moving right by 2 px; predictions follow it exactly -> TC ~ 1 with flow.
    frames, preds = [], []
    for t in range(3):
        img = np.zeros((32, 32, 3), np.uint8)
        img[10:20, 5 + 2 * t:15 + 2 * t] = 255
        frames.append(img)
        preds.append((img[..., 0] > 0).astype(np.uint8))
    tc = M.temporal_consistency(preds, frames, 2)
    assert tc > 0.85


def test_video_consistency_by_hand():
    gt = [np.array([[0, 1]]), np.array([[0, 1]]), np.array([[0, 0]])]
    pred = [np.array([[0, 1]]), np.array([[1, 1]]), np.array([[1, 0]])]
    # windows of 2: (0,1): gt const both px, pred const only px 1 -> 1/2;
    #               (1,2): gt const only px 0, pred const px 0 -> 1/1
    assert M.video_consistency(pred, gt, 2) == pytest.approx(0.75)
