"""The scores of ``vidseg eval``, taken frame by frame as the frames stream through the engine.

Nothing a sequence long is held: the confusion matrices, per-frame numbers (model ms, the TC of each pair, J and F
of each frame, VC of each window), and of the frames only what the next one needs: the previous frame and
prediction at flow size (TC: the flow between consecutive frames, the previous prediction warped by it), and per
pixel how long ground truth and prediction have stayed the same (mVC_8 / mVC_16, ``metrics.VideoConsistency``).
Whole sequences of predictions, labels and flows were held until the sequence was scored: a 640x480 frame held
2.6 MB, a 3000-frame 1080p drive ~15 GB. The flow is computed again for each engine setting scored (it depends on
the frames only; DIS at 480x360 takes ~11 ms a frame on one core).
"""
from __future__ import annotations

import math
from collections import Counter

import cv2
import numpy as np

from vidseg_ros.training import metrics
from vidseg_ros.training.metrics import (ConfusionMatrix, JandF, VideoConsistency, optical_flow,
                                         temporal_consistency)

FLOW_MAX_SIDE = 480   # flow for TC is computed at most at this size (predictions are resized to match)
VC_WINDOWS = (8, 16)
NOT_COUNTED = ('', 'new sequence', 'clip')   # engine resets that are not the data's (reported in 'resets')


def flow_size(arr: np.ndarray, interp) -> np.ndarray:
    """``arr`` with its longer side at most FLOW_MAX_SIDE (``interp``: INTER_AREA for frames, INTER_NEAREST for
    masks)."""
    h, w = arr.shape[:2]
    s = min(1.0, FLOW_MAX_SIDE / max(h, w))
    if s >= 1.0:
        return arr
    # at least 1 px a side: a 1x1000 frame (a line-scan camera) rounded to 0 rows, and OpenCV's resize stopped
    # the run with '(-215:Assertion failed) inv_scale_x > 0'
    return cv2.resize(arr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


class RunScore:
    """The metrics of one engine setting over all sequences (confusion on all / key / current frames), fed a frame
    at a time (:meth:`add`), a sequence after another (:meth:`start_sequence`); :meth:`result` gives them.

    ``temporal`` False: the split is not real video, so no TC / mVC. Otherwise TC is scored on every pair (t-1, t)
    where t follows t-1 (no break between them, ``evaluate.break_reason``), and mVC_n on every window of n
    following, labelled frames. TC and mVC_n are the mean over sequences of each sequence's mean over its scored
    pairs / windows; ``TC_pairs`` and ``mVCn_windows`` count those, and a metric with none is left out.
    ``labelled``: the labels are scored (mIoU, mVC, J&F for a two-class model, ``binary``)."""

    def __init__(self, num_classes: int, ignore: int | None, names: list[str], binary: bool, temporal: bool,
                 labelled: bool):
        self.num_classes, self.ignore, self.names = num_classes, ignore, names
        self.binary, self.temporal, self.labelled = binary, temporal, labelled
        self.cms = {k: ConfusionMatrix(num_classes, ignore) for k in ('all', 'key', 'current')}
        self.key_ms: list[float] = []
        self.cur_ms: list[float] = []
        self.resets: Counter = Counter()
        self.tcs: list[float] = []                      # per sequence
        self.vcs: dict[int, list[float]] = {n: [] for n in VC_WINDOWS}
        self.n_pairs, self.n_windows = 0, {n: 0 for n in VC_WINDOWS}
        self.jfs: list[dict] = []
        self._seq: dict | None = None

    def start_sequence(self) -> None:
        """The next frame is the first of a sequence (ends the one before)."""
        self._end_sequence()
        # J&F and mVC count the ground-truth pixels the confusion matrix counts: not void, a class of the model
        k = self.num_classes
        self._seq = {'tc': [], 'prev': None, 'jf': JandF(ignore_index=self.ignore, num_classes=k), 'labels': 0,
                     'vc': VideoConsistency(VC_WINDOWS, self.ignore, k) if self.temporal and self.labelled else None}

    def add(self, rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, is_key: bool, ms: float, reset: str,
            follows: bool) -> None:
        """One frame: its RGB (for the flow), the engine's prediction and outputs, its label (None: none), and
        whether it ``follows`` the frame before (no break: a TC pair, and mVC windows may span the two)."""
        seq = self._seq
        (self.key_ms if is_key else self.cur_ms).append(ms)
        if reset not in NOT_COUNTED:
            self.resets[reset] += 1
        if gt is not None:
            self.cms['all'].update(pred, gt)
            self.cms['key' if is_key else 'current'].update(pred, gt)
            if self.binary:
                seq['jf'].add(gt, pred)
            seq['labels'] += 1
        if not self.temporal:
            return
        frame, small = flow_size(rgb, cv2.INTER_AREA), flow_size(pred, cv2.INTER_NEAREST)
        if follows and seq['prev'] is not None and seq['prev'][0].shape == frame.shape:
            flow = optical_flow(seq['prev'][0], frame)
            tc = temporal_consistency([seq['prev'][1], small], None, self.num_classes, flows=[flow])
            if not math.isnan(tc):
                seq['tc'].append(tc)
        seq['prev'] = (_held(frame, rgb, seq['prev'], 0), _held(small, pred, seq['prev'], 1))
        if seq['vc'] is not None:
            if not follows or gt is None:
                seq['vc'].restart()
            if gt is not None:
                seq['vc'].add(pred, gt)

    def _end_sequence(self) -> None:
        seq, self._seq = self._seq, None
        if seq is None:
            return
        if self.temporal:
            self.n_pairs += len(seq['tc'])
            self.tcs.append(float(np.mean(seq['tc'])) if seq['tc'] else math.nan)
        if seq['vc'] is not None:      # mVC needs dense labels: windows of labelled frames only
            for n, values in seq['vc'].values.items():
                self.n_windows[n] += len(values)
                self.vcs[n].append(float(np.mean(values)) if values else math.nan)
        if self.binary and seq['labels']:
            self.jfs.append(seq['jf'].result())

    def result(self) -> dict:
        """The metrics (``vidseg eval``'s metrics.json, per setting)."""
        self._end_sequence()
        ms_all = self.key_ms + self.cur_ms
        out = {'latency_ms': _nanmean(ms_all), 'latency_key_ms': _nanmean(self.key_ms),
               'latency_current_ms': _nanmean(self.cur_ms), 'frames': len(ms_all), 'key_frames': len(self.key_ms),
               'resets': dict(self.resets)}
        if self.temporal:
            out['TC_pairs'] = self.n_pairs
            if self.n_pairs:
                out['TC'] = _nanmean(self.tcs)
        if not self.labelled:
            return out
        cms, names = self.cms, self.names
        out.update({'all': cms['all'].scores(names), 'key': cms['key'].scores(names),
                    'current': cms['current'].scores(names), 'confusion': cms['all'].mat.tolist()})
        if self.temporal:
            out.update({f'mVC{n}_windows': self.n_windows[n] for n in VC_WINDOWS})
            out.update({f'mVC{n}': _nanmean(self.vcs[n]) for n in VC_WINDOWS if self.n_windows[n]})
        out['mIoU'] = out['all']['mIoU']
        jf = [x for x in self.jfs if x['frames']]       # a sequence of nothing but void has no J&F
        if self.binary and jf:
            out['J'] = float(np.mean([x['J'] for x in jf]))
            out['F'] = float(np.mean([x['F'] for x in jf]))
            out['J&F'] = (out['J'] + out['F']) / 2
        return out


def _held(small: np.ndarray, arr: np.ndarray, prev: tuple | None, i: int) -> np.ndarray:
    """``small`` (``arr`` at flow size) to hold for the next frame: a copy when it is the caller's ``arr`` itself
    (a frame at most FLOW_MAX_SIDE; the caller may read the next frame into the same buffer: TC compared each frame
    with itself, 1.0), into the previous one's memory when it fits. A resized one is this object's already."""
    return metrics.held_copy(arr, None if prev is None else prev[i]) if small is arr else small


def _nanmean(x) -> float:
    x = [v for v in x if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(x)) if x else math.nan
