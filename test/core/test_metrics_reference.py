"""The metrics (training/metrics.py) against independent, obviously-correct references (plain loops, written from
the definitions: the confusion-matrix scores of docs/training.md, DAVIS 2017 ``metrics.py`` for J and F, ETC's TC
and VSPW's VC_n), on masks hypothesis draws: all-ignore frames, 1x1 images, one class, label ids beyond the
classes, uint8 / int64, non-contiguous views, many frames vs one big frame."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from vidseg_ros.training import metrics as M

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
IGNORE = 255


# --------------------------------------------------------------------------- references
def ref_confusion(pred, gt, k: int, ignore=None):
    """(K, K) counts (rows ground truth) and per ground-truth class the pixels predicted as no class (id < 0 or
    >= K), a pixel at a time; ground truth ``ignore`` or beyond the classes is left out."""
    mat, missed = np.zeros((k, k), np.int64), np.zeros(k, np.int64)
    for p, g in zip(np.asarray(pred).ravel().tolist(), np.asarray(gt).ravel().tolist()):
        if g < 0 or g >= k or g == ignore:
            continue
        if 0 <= p < k:
            mat[g, p] += 1
        else:
            missed[g] += 1
    return mat, missed


def ref_scores(mat, missed) -> dict:
    """IoU_c = TP / (TP + FP + FN), undefined (None) when the class is in neither ground truth nor prediction;
    mIoU = mean of the defined ones. Acc_c = TP / ground-truth pixels of c (None when there are none)."""
    k, iou, acc = len(mat), [], []
    for c in range(k):
        tp = int(mat[c, c])
        fn = int(mat[c].sum()) - tp + int(missed[c])
        fp = int(mat[:, c].sum()) - tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else None)
        acc.append(tp / (tp + fn) if tp + fn else None)
    total = int(mat.sum() + missed.sum())
    mean = (lambda v: sum(v) / len(v) if v else math.nan)
    return {'mIoU': mean([v for v in iou if v is not None]), 'mAcc': mean([v for v in acc if v is not None]),
            'pixel_acc': int(np.trace(mat)) / total if total else math.nan, 'iou': iou, 'acc': acc, 'pixels': total}


def davis_seg2bmap(seg):
    """DAVIS ``_seg2bmap`` a pixel at a time: a pixel whose right, bottom or bottom-right neighbour differs; on the
    last row only the right, on the last column only the bottom one; never the bottom-right corner."""
    seg, (h, w) = seg.astype(bool), seg.shape
    b = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            e = x + 1 < w and seg[y, x + 1]
            s = y + 1 < h and seg[y + 1, x]
            se = x + 1 < w and y + 1 < h and seg[y + 1, x + 1]
            v = seg[y, x]
            b[y, x] = (v != e) | (v != s) | (v != se)
            if y == h - 1:
                b[y, x] = v != e
            if x == w - 1:
                b[y, x] = v != s
    b[-1, -1] = False
    return b


def dilate_disk(b, r: int):
    """Every pixel within Euclidean distance ``r`` of a pixel of ``b`` (skimage ``disk(r)``: dx^2 + dy^2 <= r^2)."""
    h, w = b.shape
    out = np.zeros_like(b)
    for y, x in zip(*np.nonzero(b)):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx <= r * r and 0 <= y + dy < h and 0 <= x + dx < w:
                    out[y + dy, x + dx] = True
    return out


def davis_f(gt, pred, void=None, bound_th=0.008) -> float:
    """DAVIS 2017 ``f_measure``: void pixels are background in both masks."""
    keep = np.ones(gt.shape, bool) if void is None else ~void
    r = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape)))
    fb, gb = davis_seg2bmap(pred.astype(bool) & keep), davis_seg2bmap(gt.astype(bool) & keep)
    nf, ng = int(fb.sum()), int(gb.sum())
    if nf == 0 or ng == 0:
        p, rc = (1, 0) if nf == 0 and ng else (0, 1) if ng == 0 and nf else (1, 1)
    else:
        p, rc = (fb & dilate_disk(gb, r)).sum() / nf, (gb & dilate_disk(fb, r)).sum() / ng
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def davis_j(gt, pred, void=None) -> float:
    keep = np.ones(gt.shape, bool) if void is None else ~void
    inter, union = (gt & pred & keep).sum(), ((gt | pred) & keep).sum()
    return 1.0 if union == 0 else inter / union


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _check_scores(s: dict, ref: dict) -> None:
    for key in ('mIoU', 'mAcc', 'pixel_acc'):
        assert _same(s[key], ref[key]), (key, s[key], ref[key])
    assert s['pixels'] == ref['pixels']
    assert all(_same(a, b) for a, b in zip(s['per_class_iou'].values(), ref['iou'])), (s, ref)
    assert all(_same(a, b) for a, b in zip(s['per_class_acc'].values(), ref['acc'])), (s, ref)


# --------------------------------------------------------------------------- strategies
@st.composite
def label_pairs(draw, max_side=12):
    """(pred, gt, K): masks of 1..max_side a side, ids up to K + 2 and the ignore id, as uint8 or int64, maybe
    a non-contiguous view (transposed or strided)."""
    k = draw(st.integers(1, 5))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    ids = st.one_of(st.integers(0, k + 2), st.just(IGNORE))
    dtype = draw(st.sampled_from([np.uint8, np.int64]))
    gt = draw(arrays(dtype, (h, w), elements=ids))
    pred = draw(arrays(dtype, (h, w), elements=st.integers(0, k + 2)))
    if draw(st.booleans()):
        gt, pred = gt.T, pred.T
    if draw(st.booleans()):
        gt, pred = gt[::2], pred[::2]
    return pred, gt, k


@st.composite
def binary_pairs(draw, max_side=14):
    """(gt, pred, void) binary masks of rectangles (objects touching the border as often as not), void maybe."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    masks = []
    for _ in range(3):
        m = np.zeros((h, w), bool)
        for _ in range(draw(st.integers(0, 3))):
            y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            m[y0:y0 + draw(st.integers(1, h)), x0:x0 + draw(st.integers(1, w))] = True
        masks.append(m)
    gt, pred, void = masks
    return gt, pred, (void if draw(st.booleans()) else None)


# --------------------------------------------------------------------------- confusion-matrix scores
@SETTINGS
@given(label_pairs(), st.sampled_from([None, IGNORE]))
@example((np.zeros((2, 3), np.uint8), np.full((2, 3), IGNORE, np.uint8), 3), IGNORE)      # an all-ignore frame
@example((np.array([[4]]), np.array([[0]]), 1), None)                  # 1x1, one class, predicted beyond it
@example((np.array([[1, 2]], np.int64), np.array([[0, 9]], np.int64), 3), IGNORE)   # predicted, not in gt
@example((np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2], np.ones((6, 4), np.uint8)[::2, 1::2], 4), None)
def test_confusion_scores_equal_the_reference(case, ignore):
    pred, gt, k = case
    cm = M.ConfusionMatrix(k, ignore)
    cm.update(pred, gt)
    mat, missed = ref_confusion(pred, gt, k, ignore)
    assert np.array_equal(cm.mat, mat)
    _check_scores(cm.scores(), ref_scores(mat, missed))


@SETTINGS
@given(st.lists(label_pairs(max_side=6), min_size=1, max_size=6))
def test_many_frames_score_as_one_big_frame(cases):
    """Accumulating frame after frame is the confusion of all pixels at once (whatever the frames' sizes)."""
    k = max(c[2] for c in cases)
    cm = M.ConfusionMatrix(k, IGNORE)
    for pred, gt, _ in cases:
        cm.update(pred, gt)
    flat_pred = np.concatenate([p.ravel().astype(np.int64) for p, _, _ in cases])
    flat_gt = np.concatenate([g.ravel().astype(np.int64) for _, g, _ in cases])
    big = M.ConfusionMatrix(k, IGNORE)
    big.update(flat_pred, flat_gt)
    assert np.array_equal(cm.mat, big.mat)
    _check_scores(cm.scores(), ref_scores(*ref_confusion(flat_pred, flat_gt, k, IGNORE)))


# --------------------------------------------------------------------------- DAVIS J and F
@SETTINGS
@given(binary_pairs())
def test_j_and_f_equal_davis(case):
    gt, pred, void = case
    valid = None if void is None else ~void
    assert M.db_eval_iou(gt, pred, valid) == pytest.approx(davis_j(gt, pred, void), abs=1e-12)
    for th in (0.008, 0.1, 1, 2):
        assert M.db_eval_boundary(gt, pred, th, valid) == pytest.approx(davis_f(gt, pred, void, th), abs=1e-12), th


def test_f_ignores_the_image_border_as_davis_does():
    """An object filling the left half of a DAVIS-size frame, predicted 10 px narrower: the contours are 10 px
    apart, beyond the tolerance (ceil(0.008 * 979.5) = 8 px), so DAVIS scores F = 0. The image border counted as
    a contour both masks share: F was 0.73."""
    gt = np.zeros((480, 854), bool)
    gt[:, :400] = True
    pred = np.zeros_like(gt)
    pred[:, :390] = True
    assert M.db_eval_boundary(gt, pred) == 0.0
    full = np.ones((6, 6), bool)
    assert M.db_eval_boundary(full, full) == 1.0 and not M.seg2bmap(full).any()   # no contour at all


def test_f_tolerance_is_a_euclidean_disk():
    """DAVIS dilates with skimage's disk(8) at 854x480 (dx^2 + dy^2 <= 64): of two one-pixel objects 7 px down and
    4 across (8.06 px), a quarter of the contour pixels (2x2 each) are out of reach of the other's and F is 0.75;
    OpenCV's 17x17 ellipse, wider than the disk, scored 1.0."""
    gt = np.zeros((480, 854), bool)
    gt[100, 100] = True
    pred = np.zeros_like(gt)
    pred[107, 104] = True
    want = davis_f(gt[80:130, 80:130], pred[80:130, 80:130], bound_th=8)   # the same contours, cropped
    assert M.db_eval_boundary(gt, pred) == pytest.approx(want) == 0.75


# --------------------------------------------------------------------------- temporal consistency, mVC
def ref_warp(mask, flow):
    """out[y, x] = mask at (y + fy, x + fx) rounded, clamped into the image (nearest, border replicated)."""
    h, w = mask.shape
    out = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            sy = min(max(int(round(y + float(flow[y, x, 1]))), 0), h - 1)
            sx = min(max(int(round(x + float(flow[y, x, 0]))), 0), w - 1)
            out[y, x] = mask[sy, sx]
    return out


def ref_tc(preds, flows, k: int) -> float:
    """Mean over consecutive pairs of the mIoU between pred[t] and pred[t-1] warped to t (ETC)."""
    pairs = []
    for t in range(1, len(preds)):
        mat, missed = ref_confusion(ref_warp(preds[t - 1], flows[t - 1]), preds[t], k)
        pairs.append(ref_scores(mat, missed)['mIoU'])
    return sum(pairs) / len(pairs) if pairs else math.nan


def ref_vc(preds, gts, n: int, ignore=None) -> float:
    """VSPW VC_n: per window of n frames, of the pixels whose ground truth is the same in all n (and not
    ``ignore``), the share whose prediction is the same in all n too; the mean over windows with such pixels."""
    values = []
    for s in range(len(preds) - n + 1):
        const = same = 0
        for y in range(gts[0].shape[0]):
            for x in range(gts[0].shape[1]):
                g = {int(gts[t][y, x]) for t in range(s, s + n)}
                if len(g) == 1 and g != {ignore}:
                    const += 1
                    same += len({int(preds[t][y, x]) for t in range(s, s + n)}) == 1
        if const:
            values.append(same / const)
    return sum(values) / len(values) if values else math.nan


@st.composite
def sequences(draw, max_side=6, max_len=6):
    """(preds, gts, flows, K): 1..max_len frames of one size; ground truth and prediction mostly stay the same
    from frame to frame (so VC windows have constant pixels); flows of whole pixels +- 0.25 (no rounding ties)."""
    k = draw(st.integers(1, 4))
    h, w, t = draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(st.integers(1, max_len))
    dtype = draw(st.sampled_from([np.uint8, np.int64]))
    frame = arrays(dtype, (h, w), elements=st.integers(0, k - 1))
    gts, preds = [draw(frame)], [draw(frame)]
    for _ in range(t - 1):
        for seq in (gts, preds):
            seq.append(np.where(draw(arrays(bool, (h, w))), draw(frame), seq[-1]).astype(dtype))
    gts = [np.where(draw(arrays(bool, (h, w))) & (g == 0), IGNORE, g).astype(dtype) for g in gts]
    whole = arrays(np.int64, (h, w, 2), elements=st.integers(-2, 2))
    frac = arrays(np.float32, (h, w, 2), elements=st.floats(-0.25, 0.25, width=32))
    flows = [(draw(whole) + draw(frac)).astype(np.float32) for _ in range(t - 1)]
    return preds, gts, flows, k


@SETTINGS
@given(sequences())
@example(([np.array([[1]])], [np.array([[1]])], [], 2))                               # one frame: no pair
@example(([np.array([[0, 1]]), np.array([[1, 1]])], [np.array([[0, 1]])] * 2, [np.zeros((1, 2, 2), np.float32)], 2))
def test_tc_and_vc_equal_the_reference(case):
    preds, gts, flows, k = case
    assert _same(M.temporal_consistency(preds, None, k, flows=flows), ref_tc(preds, flows, k))
    for n in (2, 3):
        want = ref_vc(preds, gts, n, IGNORE)
        assert _same(M.video_consistency(preds, gts, n, IGNORE), want), n
        vc = M.VideoConsistency((2, 3), IGNORE)
        for p, g in zip(preds, gts):
            vc.add(p, g)
        got = vc.values[n]
        assert _same(float(np.mean(got)) if got else math.nan, want), n


def test_tc_of_class_ids_beyond_255():
    """A 300-class model's predictions (int64): the warp went through uint8, so class 280 came back as 24 and a
    constant prediction scored TC 0.2 against itself (zero flow)."""
    pred = np.array([[0, 280], [280, 299]], np.int64)
    zero = np.zeros((2, 2, 2), np.float32)
    assert np.array_equal(M.warp_mask(pred, zero), pred)
    assert M.temporal_consistency([pred, pred], None, 300, flows=[zero]) == 1.0
    flows = [np.full((2, 2, 2), -1.0, np.float32)]
    assert M.temporal_consistency([pred, pred], None, 300, flows=flows) == ref_tc([pred, pred], flows, 300)


def test_counts_of_1e5_full_hd_frames_do_not_overflow_or_round():
    """1e5 frames of 1920x1080 (2.07e11 pixels, over 2^32): int64 counts, float64 scores exact to the pixel."""
    frames, hd = 100_000, 1920 * 1080
    cm = M.ConfusionMatrix(3, IGNORE)
    cm.update(np.array([0, 1, 2, 0]), np.array([0, 1, 2, 1]))     # one pixel of class 1 predicted 0
    cm.mat += np.diag([frames * hd // 2, frames * hd // 4, frames * hd // 4])
    s = cm.scores()
    assert cm.mat.dtype == np.int64 and s['pixels'] == frames * hd + 4
    n1 = frames * hd // 4 + 1
    assert s['per_class_iou']['1'] == (n1 - 1) / n1 != 1.0
    assert s['pixel_acc'] == (frames * hd + 3) / (frames * hd + 4) != 1.0


def test_a_transposed_label_is_refused_not_scored():
    """A 480x360 label of a 360x480 frame has as many pixels: the confusion matrix scored it pixel by pixel."""
    cm = M.ConfusionMatrix(2)
    with pytest.raises(ValueError, match='sizes differ: \\(3, 4\\) vs \\(4, 3\\)'):
        cm.update(np.zeros((3, 4), np.uint8), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match='sizes differ'):
        cm.update(np.zeros(12, np.uint8), np.zeros((3, 4), np.uint8))
    cm.update(np.zeros((1, 3, 4), np.uint8), np.zeros((3, 4), np.uint8))    # a batch of one
    assert cm.mat.sum() == 12
