"""Segmentation metrics on numpy masks: confusion-matrix scores, DAVIS J&F, temporal consistency.

Definitions:
- IoU_c = TP / (TP + FP + FN) from the confusion matrix accumulated over the whole set (not
  averaged per image); mIoU averages the classes that occur in the ground truth or the prediction (a class
  predicted but in no ground truth counts, with IoU 0; one in neither is skipped).
  mAcc averages per-class recall TP / (TP + FN) over classes present in the ground truth; pixel
  accuracy is trace / total. Pixels labelled ``ignore_index`` are left out everywhere, and so are ground-truth
  ids of no class (:func:`scored`); a predicted id of no class is an error for the pixel's true class.
- J is the region IoU of a binary mask; F the DAVIS contour accuracy: boundaries are one pixel thick (DAVIS
  ``seg2bmap``: not along the image border), matched within a disk of ceil(``bound_th`` * image diagonal)
  pixels, F = 2PR / (P + R); both are 1 for two empty masks, and F is 0 when only one mask has a contour.
- TC (ETC, Liu et al. 2020) is the IoU between the prediction at t and the prediction at t-1 warped
  to t by optical flow, averaged over consecutive pairs. mVC_n (VSPW) is the share of pixels whose
  ground truth stays constant over n frames where the prediction also stays constant.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from vidseg_ros.data.labelling.flow import flow_any_size


class ConfusionMatrix:
    """Accumulates a (K, K) confusion matrix; rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one or a batch of (…, H, W) integer masks of the same shape (size-1 axes aside)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        # the shapes, not the pixel counts: a 480x360 label of a 360x480 frame was scored pixel by pixel
        if [d for d in pred.shape if d != 1] != [d for d in gt.shape if d != 1]:
            raise ValueError(f'prediction and ground truth sizes differ: {pred.shape} vs {gt.shape}')
        pred, gt = pred.ravel().astype(np.int64), gt.ravel().astype(np.int64)
        keep = scored(gt, self.ignore_index, self.num_classes)
        pred, gt = pred[keep], gt[keep]
        # Out-of-range predictions count as wrong for their true class but belong to no column.
        valid = (pred >= 0) & (pred < self.num_classes)
        k = self.num_classes
        self.mat += np.bincount(gt[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
        if not valid.all():
            self._missed = getattr(self, '_missed', np.zeros(k, np.int64))
            self._missed += np.bincount(gt[~valid], minlength=k)

    def scores(self, class_names: list[str] | None = None) -> dict:
        """mIoU, mAcc, pixel accuracy and per-class IoU/accuracy (NaN for absent classes)."""
        return scores_from_confusion(self.mat, class_names, getattr(self, '_missed', None))


def scores_from_confusion(mat: np.ndarray, class_names: list[str] | None = None,
                          missed: np.ndarray | None = None) -> dict:
    """Scores from a confusion matrix; see the module docstring for the definitions."""
    mat = np.asarray(mat, dtype=np.float64)
    tp = np.diag(mat)
    gt_count = mat.sum(1) + (missed if missed is not None else 0)
    pred_count = mat.sum(0)
    union = gt_count + pred_count - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_count > 0, tp / gt_count, np.nan)
    total = gt_count.sum()
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        'mIoU': _nanmean(iou), 'mAcc': _nanmean(acc),
        'pixel_acc': float(tp.sum() / total) if total else math.nan,
        'per_class_iou': {n: _f(v) for n, v in zip(names, iou)},
        'per_class_acc': {n: _f(v) for n, v in zip(names, acc)},
        'pixels': int(total),
    }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def _f(v) -> float | None:
    return None if np.isnan(v) else float(v)


def json_ready(value):
    """``value`` (dicts, lists, scalars) with every NaN or infinite float as None: an undefined score
    (no labelled pixel) is null in JSON, where json.dumps would write a bare NaN that JSON readers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def scored(gt: np.ndarray, ignore_index: int | None, num_classes: int | None = None) -> np.ndarray | None:
    """(H, W) bool: the ground-truth pixels a score counts, as the confusion matrix does: not ``ignore_index`` and,
    given ``num_classes``, an id of a class (a label's void 255 under a model whose ignore id is another one
    counted as object in J&F: a perfect prediction scored J 0.67). None: every pixel."""
    if ignore_index is None and num_classes is None:
        return None
    valid = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    if num_classes is not None:
        valid &= (gt >= 0) & (gt < num_classes)
    return valid


# --------------------------------------------------------------------------- DAVIS J and F
def db_eval_iou(gt: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None) -> float:
    """J: region IoU of two binary masks over the ``valid`` pixels (all when None); 1 when both are empty there
    (the DAVIS convention)."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    inter, union = np.logical_and(gt, pred), np.logical_or(gt, pred)
    if valid is not None:
        inter, union = inter & valid, union & valid
    if union.sum() == 0:
        return 1.0
    return float(inter.sum() / union.sum())


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask, as DAVIS ``seg2bmap``: a pixel (object or background) whose right,
    bottom or bottom-right neighbour differs. The image border is no boundary: an object cut by the frame edge
    has a contour only where it meets the background (counting the border inflated F: a half-image object and a
    prediction 10 px off scored F 0.73 at 854x480, DAVIS 0)."""
    m = mask.astype(bool)
    b = np.zeros_like(m)
    b[:-1, :-1] = (m[:-1, :-1] != m[:-1, 1:]) | (m[:-1, :-1] != m[1:, :-1]) | (m[:-1, :-1] != m[1:, 1:])
    b[-1, :-1] = m[-1, :-1] != m[-1, 1:]       # last row: only the right neighbour
    b[:-1, -1] = m[:-1, -1] != m[1:, -1]       # last column: only the bottom neighbour
    return b


def disk(radius: float) -> np.ndarray:
    """The (2r+1, 2r+1) structuring element of the offsets within ``radius`` (x^2 + y^2 <= r^2), as
    ``skimage.morphology.disk`` that DAVIS dilates with; OpenCV's MORPH_ELLIPSE is wider (213 pixels at r = 8,
    DAVIS' tolerance at 854x480, against 197): it matched contours 8.06 px apart."""
    r = int(math.floor(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def db_eval_boundary(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008,
                     valid: np.ndarray | None = None) -> float:
    """F: DAVIS contour accuracy (``f_measure`` of the DAVIS 2017 evaluation) between two binary masks.

    Args:
        gt: (H, W) ground-truth mask.
        pred: (H, W) predicted mask.
        bound_th: tolerance; < 1 means ceil(bound_th * image diagonal) pixels, >= 1 pixels.
        valid: (H, W) bool, the labelled pixels (None = all): both masks count as background elsewhere (DAVIS'
            void pixels).

    Contours are :func:`seg2bmap`; precision is the share of predicted contour pixels within the tolerance
    (a :func:`disk`) of a ground-truth one, recall the converse, F = 2PR / (P + R); 1 when neither mask has a
    contour, 0 when only one has.
    """
    h, w = gt.shape
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(h, w))
    gt, pred = gt.astype(bool), pred.astype(bool)
    if valid is not None:
        gt, pred = gt & valid, pred & valid
    gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_pred = gt_b.sum(), pred_b.sum()
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    kernel = disk(radius)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    precision = (pred_b & gt_dil).sum() / n_pred
    recall = (gt_b & pred_dil).sum() / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def j_and_f(gts: list[np.ndarray], preds: list[np.ndarray], bound_th: float = 0.008,
            ignore_index: int | None = None, num_classes: int | None = None) -> dict:
    """Mean J, F and J&F over a sequence of binary masks (nonzero = foreground), over the pixels whose ground truth
    is scored (:func:`scored`: not ``ignore_index``, below ``num_classes``): a 255 (void) pixel of a two-class
    dataset counted as foreground, and a frame of nothing but void scored J = F = 1. Frames without a labelled
    pixel are left out (``frames`` counts the scored ones); with none, J, F and J&F are NaN."""
    jf = JandF(bound_th, ignore_index, num_classes)
    for g, p in zip(gts, preds):
        jf.add(g, p)
    return jf.result()


class JandF:
    """:func:`j_and_f` of a sequence fed a frame at a time: holds J and F of each frame, not the masks."""

    def __init__(self, bound_th: float = 0.008, ignore_index: int | None = None, num_classes: int | None = None):
        self.bound_th, self.ignore_index, self.num_classes = bound_th, ignore_index, num_classes
        self.js: list[float] = []
        self.fs: list[float] = []

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        valid = scored(gt, self.ignore_index, self.num_classes)
        if valid is not None and not valid.any():
            return
        self.js.append(db_eval_iou(gt > 0, pred > 0, valid))
        self.fs.append(db_eval_boundary(gt > 0, pred > 0, self.bound_th, valid))

    def result(self) -> dict:
        j, f = (float(np.mean(v)) if v else math.nan for v in (self.js, self.fs))
        return {'J': j, 'F': f, 'J&F': (j + f) / 2, 'frames': len(self.js)}


# --------------------------------------------------------------------------- temporal consistency
def optical_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) from ``next`` back to ``prev`` (for backward warping prev -> next); a frame under
    ``labelling.flow.MIN_FLOW_SIDE`` a side gets the flow of its enlarged copy, brought back to its size."""
    return flow_any_size(_dis_flow, prev_rgb, next_rgb)


def _dis_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray) -> np.ndarray:
    a = cv2.cvtColor(next_rgb, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def warp_mask(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp an integer mask with flow (H, W, 2): out[y, x] = mask[y + fy, x + fx] (nearest pixel, the
    border replicated), of ``mask``'s dtype. Ids beyond uint8 go through float32 (exact below 2^24): cast to
    uint8, class 280 came back as 24."""
    h, w = mask.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    src = mask if mask.dtype == np.uint8 else mask.astype(np.float32)
    out = cv2.remap(src, xs + flow[..., 0], ys + flow[..., 1], interpolation=cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_REPLICATE)
    return out if mask.dtype == np.uint8 else out.astype(mask.dtype)


def mask_miou(a: np.ndarray, b: np.ndarray, num_classes: int, ignore_index: int | None = None) -> float:
    """mIoU between two label maps, over the classes present in either."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(a, b)
    return cm.scores()['mIoU']


def temporal_consistency(preds: list[np.ndarray], frames: list[np.ndarray] | None, num_classes: int,
                         flows: list[np.ndarray] | None = None) -> float:
    """TC: mean IoU between pred[t] and pred[t-1] warped to t by optical flow.

    Args:
        preds: (H, W) integer predictions in temporal order.
        frames: the RGB frames (to compute flow); may be None when ``flows`` is given.
        num_classes: classes in the predictions.
        flows: optional precomputed flows, ``flows[t-1]`` maps frame t back to t-1 (H, W, 2).
    """
    if len(preds) < 2:
        return math.nan
    scores = []
    for t in range(1, len(preds)):
        flow = flows[t - 1] if flows is not None else optical_flow(frames[t - 1], frames[t])
        warped = warp_mask(preds[t - 1], flow)
        scores.append(mask_miou(warped, preds[t], num_classes))
    return float(np.nanmean(scores))


def video_consistency(preds: list[np.ndarray], gts: list[np.ndarray], n: int,
                      ignore_index: int | None = None, num_classes: int | None = None) -> float:
    """VC_n (VSPW): over every window of n frames, pixels with constant, scored (:func:`scored`) GT whose
    prediction is constant too, divided by pixels with constant, scored GT; averaged over windows."""
    if len(preds) < n or n < 2:
        return math.nan
    values = []
    for s in range(len(preds) - n + 1):
        g = np.stack(gts[s:s + n])
        p = np.stack(preds[s:s + n])
        gt_const = (g == g[0]).all(0)
        valid = scored(g[0], ignore_index, num_classes)
        if valid is not None:
            gt_const &= valid
        pred_const = (p == p[0]).all(0)
        denom = gt_const.sum()
        if denom:
            values.append((gt_const & pred_const).sum() / denom)
    return float(np.mean(values)) if values else math.nan


class VideoConsistency:
    """VC_n (:func:`video_consistency`) of every window of n consecutive frames, for each n of ``windows``, fed a
    frame at a time: a window's ground truth (prediction) is constant at a pixel when its value has stayed the same
    for the last n frames, so this holds per pixel how many frames each has (at most the largest n, uint8) and the
    previous frame's masks (its own copies: a caller that reads every frame into one buffer had each frame compared
    with itself, VC 1.0), not the window. ``values[n]`` is the VC_n of each window with a constant ground-truth
    pixel, in order: the numbers :func:`video_consistency` gives for each window alone."""

    def __init__(self, windows: tuple[int, ...] = (8, 16), ignore_index: int | None = None,
                 num_classes: int | None = None):
        if not windows or min(windows) < 2 or max(windows) > 255:
            raise ValueError(f'VC windows are 2..255 frames long, got {windows}')
        self.windows, self.ignore_index, self.num_classes = tuple(windows), ignore_index, num_classes
        self.values: dict[int, list[float]] = {n: [] for n in self.windows}
        self.restart()

    def restart(self) -> None:
        """The next frame does not follow the last one (a break, a frame without a label): no window spans it."""
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._frames = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Frame t (its prediction and ground truth), following frame t-1 (else :meth:`restart` first)."""
        if self._prev is None or self._prev[1].shape != gt.shape:
            self._frames = 0
            self._same_gt = np.zeros(gt.shape, np.uint8)
            self._same_pred = np.zeros(gt.shape, np.uint8)
        cap = max(self.windows)
        for same, now, before in ((self._same_gt, gt, None if self._prev is None else self._prev[1]),
                                  (self._same_pred, pred, None if self._prev is None else self._prev[0])):
            if self._frames:
                kept = now == before
                np.minimum(same, cap - 1, out=same)
                same += 1
                same[~kept] = 1
            else:
                same[...] = 1
        self._frames += 1
        self._prev = (held_copy(pred, self._prev and self._prev[0]), held_copy(gt, self._prev and self._prev[1]))
        valid = scored(gt, self.ignore_index, self.num_classes)
        for n in self.windows:
            if self._frames < n:
                continue
            gt_const = self._same_gt >= n
            if valid is not None:
                gt_const &= valid
            denom = gt_const.sum()
            if denom:
                self.values[n].append((gt_const & (self._same_pred >= n)).sum() / denom)


def held_copy(arr: np.ndarray, buf: np.ndarray | None) -> np.ndarray:
    """``arr`` copied into ``buf`` when that has its shape and dtype (the copy held for the next frame reuses the
    last one's memory), else a new copy. A scorer holds copies: the caller may write the next frame into ``arr``."""
    arr = np.asarray(arr)
    if buf is None or buf.shape != arr.shape or buf.dtype != arr.dtype:
        return arr.copy()
    np.copyto(buf, arr)
    return buf
