"""Scores of two-class (ids 0 / 1) masks as ``vidseg eval`` feeds them, against numbers worked out by hand."""
import math

import numpy as np

from vidseg_ros.training.metrics import JandF

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
