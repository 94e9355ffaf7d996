"""Hindsight-best key-frame placement: what any adaptive policy could gain at most on a split.

Not a policy (it sees the future): for every frame j as a key frame and every later frame i within
``max_interval`` frames, the engine runs frame i on j's cache once, and records the share of pixels
labelled unlike the every-frame run (*flips*) and, with labels, the confusion against the ground truth.
A current frame's output depends only on its key frame, so any placement's cost is a sum of these pairs;
dynamic programming then finds, for each trade-off ``lam`` (cost of one key frame in flips), the
placement with the fewest flips for its number of key frames (the Lagrangian sweep gives the points on
the lower convex hull of flips vs key ratio). The same pairs price any other placement exactly, so
alternative adaptive rules can be replayed offline (:func:`rule_points`) before one is built into
``engine/policy.py``. Used by ``bench/keyframe_curve.py``.
"""
from __future__ import annotations

import numpy as np

import torch

from vidseg_ros.data.images import read_rgb
from vidseg_ros.engine.policy import change_descriptor, relative_change
from vidseg_ros.training.metrics import ConfusionMatrix, scores_from_confusion

LAMBDAS = np.geomspace(1e-4, 3.0, 24)


def pair_costs(ev, every: list, max_interval: int) -> list[dict]:
    """Per sequence: flips[i, lag] and confusion[i, lag] of frame i run on the cache of frame i - lag
    (lag 0 = frame i as a key frame), and each frame's change descriptor (as the adaptive policy sees
    it). Stamps are not passed: only the cache's age matters here."""
    ev.seg.update_config(ev.config(keyframe_interval=max_interval + 1))
    k, ignore = len(ev.names), ev.seg.meta.get('ignore_index')
    out = []
    for recs, ref in zip(ev.seqs.values(), every):
        frames = [read_rgb(r.image) for r in recs]
        with torch.inference_mode():      # the engine's input buffer is an inference tensor
            desc = [change_descriptor(ev.seg.preprocess(f)[0]).clone() for f in frames]
        gts = [ev.src.read_label(r) for r in recs] if ev.with_labels else None
        n = len(frames)
        flips = np.full((n, max_interval), np.nan)
        conf = np.zeros((n, max_interval, k, k), np.int64) if gts else None
        for j in range(n):
            ev.seg.reset('reset')
            for lag in range(min(max_interval, n - j)):
                i = j + lag
                res = ev.seg.step(frames[i])
                if res.is_key != (lag == 0):
                    raise RuntimeError(f'the engine chose key={res.is_key} at lag {lag} ({res.key_reason})')
                flips[i, lag] = float((res.class_ids != ref[i]).mean())
                if gts:
                    cm = ConfusionMatrix(k, ignore)
                    cm.update(res.class_ids, gts[i])
                    conf[i, lag] = cm.mat
        out.append({'flips': flips, 'conf': conf, 'desc': desc})
    return out


def best_placement(flips: np.ndarray, lam: float) -> list[int]:
    """Key frames (first frame included) minimising flips + lam * keys, gaps at most flips.shape[1]."""
    n, m = flips.shape
    best, back = np.full(n + 1, np.inf), np.zeros(n + 1, int)
    best[0] = 0.0
    for end in range(1, n + 1):
        for length in range(1, min(m, end) + 1):
            j = end - length
            seg = sum(flips[j + lag, lag] for lag in range(1, length))   # current frames after key j
            if best[j] + seg + lam < best[end]:
                best[end], back[end] = best[j] + seg + lam, j
    keys, end = [], n
    while end > 0:
        end = back[end]
        keys.append(end)
    return sorted(keys)


def placement_point(costs: list[dict], placements: list[list[int]], names: list[str], policy: str,
                    setting: float) -> dict:
    """Key ratio, flips (mean, p95) and mIoU of given key frames per sequence, priced from the pairs."""
    per_frame, mat, keys = [], 0, 0
    for c, key_at in zip(costs, placements):
        keys += len(key_at)
        for j, end in zip(key_at, key_at[1:] + [len(c['flips'])]):
            for lag in range(end - j):
                per_frame.append(c['flips'][j + lag, lag])
                if c['conf'] is not None:
                    mat = mat + c['conf'][j + lag, lag]
    miou = scores_from_confusion(mat, names)['mIoU'] if costs[0]['conf'] is not None else float('nan')
    return {'policy': policy, 'setting': float(setting), 'frames': len(per_frame), 'key_frames': keys,
            'key_ratio': keys / len(per_frame), 'flips': float(np.mean(per_frame)),
            'flips_p95': float(np.percentile(per_frame, 95)), 'mIoU': float(miou)}


def oracle_points(costs: list[dict], names: list[str]) -> list[dict]:
    """One point per distinct key count over the lambda sweep: key ratio, flips (mean, p95), mIoU."""
    points = {}
    for lam in LAMBDAS:
        p = placement_point(costs, [best_placement(c['flips'], lam) for c in costs], names, 'oracle', lam)
        points.setdefault(p['key_frames'], p)
    return [points[k] for k in sorted(points)]


def rule_placement(desc: list, max_interval: int, threshold: float, alpha: float) -> list[int]:
    """The adaptive policy replayed offline: a key frame when the descriptor's change since the key frame
    times (frames since it) ** alpha exceeds ``threshold``, or after ``max_interval`` frames. alpha 0 is
    engine/policy.py's rule; alpha 1 spaces key frames by about 1 / sqrt(speed) where it spaces them by
    1 / speed, which is what minimises the mean cost when the cost grows linearly with the change."""
    keys, last = [0], 0
    for i in range(1, len(desc)):
        since = i - last
        if since >= max_interval or relative_change(desc[i], desc[last]) * since ** alpha > threshold:
            keys.append(i)
            last = i
    return keys


def rule_points(costs: list[dict], names: list[str], max_interval: int, alpha: float,
                thresholds) -> list[dict]:
    """The replayed rule over a threshold sweep, priced like the hindsight placement."""
    return [placement_point(costs, [rule_placement(c['desc'], max_interval, t, alpha) for c in costs], names,
                            f'rule alpha={alpha:g}', t) for t in thresholds]
