"""Metrics against numbers worked out by hand: J&F of two-class (ids 0 / 1) masks as ``vidseg eval`` feeds them, mVC
of a tiny clip and of a long one."""
import math

import numpy as np
import pytest

from vidseg_ros.training.metrics import JandF, VideoConsistency, video_consistency

VOID = 255


def _square(rows, cols, hw=(8, 8)) -> np.ndarray:
    m = np.zeros(hw, np.uint8)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


def test_j_of_class_id_1_masks_leaves_void_out():
    """Object 4x4 (rows 2-5, cols 2-5), prediction shifted one column right: 12 pixels shared, 20 in either. The
    ground truth's column 6 of those rows is void: the 4 predicted pixels there count nowhere, J = 12 / 16."""
    gt, pred = _square((2, 6), (2, 6)), _square((2, 6), (3, 7))
    jf = JandF(ignore_index=VOID, num_classes=2)
    jf.add(gt, pred)
    assert math.isclose(jf.result()['J'], 12 / 20)
    gt[2:6, 6] = VOID
    jf = JandF(ignore_index=VOID, num_classes=2)
    jf.add(gt, pred)
    assert math.isclose(jf.result()['J'], 12 / 16)


def test_a_perfect_class_id_1_prediction_scores_1_and_an_empty_one_0():
    gt = _square((2, 6), (2, 6))
    for pred, score in ((gt.copy(), 1.0), (np.zeros_like(gt), 0.0)):   # F 0: only the ground truth has a contour
        jf = JandF(ignore_index=VOID, num_classes=2)
        jf.add(gt, pred)
        jf.add(np.full_like(gt, VOID), gt.copy())      # nothing labelled: not a frame of the score
        assert jf.result() == {'J': score, 'F': score, 'J&F': score, 'frames': 1}


def test_mvc_of_a_two_pixel_clip_by_hand():
    """Pixel A: ground truth constant, prediction changes at frame 3. Pixel B: ground truth changes at frame 2,
    prediction constant. Windows of 3 frames: [0-2] 1/1 (only A's GT constant, its prediction too), [1-3] 0/1,
    [2-4] 1/2 (A's prediction changed), [3-5] 2/2. Windows of 4: [0-3] 0/1, [1-4] 0/1, [2-5] 1/2. The windows
    are given longest first (each is scored on its own)."""
    gts = [np.array([[5, b]], np.uint8) for b in (0, 0, 1, 1, 1, 1)]
    preds = [np.array([[a, 7]], np.uint8) for a in (0, 0, 0, 1, 1, 1)]
    vc = VideoConsistency((4, 3))
    for p, g in zip(preds, gts):
        vc.add(p, g)
    assert vc.values == {3: [1.0, 0.0, 0.5, 1.0], 4: [0.0, 0.0, 0.5]}
    assert video_consistency(preds, gts, 3) == 0.625 and video_consistency(preds, gts, 4) == pytest.approx(1 / 6)


def test_mvc_of_a_run_longer_than_255_frames():
    """The per-pixel count of unchanged frames is uint8: past 255 frames a constant pixel must stay constant
    (every window of a constant clip scores 1), not wrap round to 0 and leave the windows unscored."""
    vc = VideoConsistency((8, 16))
    gt, pred = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)
    for _ in range(300):
        vc.add(pred, gt)
    assert vc.values == {8: [1.0] * 293, 16: [1.0] * 285}
