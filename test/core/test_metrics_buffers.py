"""The streaming scores hold the frames they need past a call as their own copies.

``VideoConsistency.add`` and ``eval_stream.RunScore.add`` kept references to the previous frame's arrays: a caller
that reads every frame into one buffer (a preallocated array, a camera or engine handing out a view of its own
buffer) compared each frame with itself, so "the previous frame" was the current one: TC 1.0 and mVC_8 1.0 on a
clip whose masks change (0.50 and 0.28 with fresh arrays). ``stream_sequence(keep=True)`` kept every
prediction by reference: all of them came back as the last one.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from vidseg_ros.tools import evaluate
from vidseg_ros.tools.eval_stream import RunScore
from vidseg_ros.training.metrics import VideoConsistency

H, W = 48, 64


def _clip(frames: int = 12, seed: int = 0):
    """RGB frames of noise with a block moving 3 px a frame; labels and predictions of the block that change."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    rgbs, gts, preds = [], [], []
    for t in range(frames):
        gt = np.zeros((H, W), np.uint8)
        gt[10:30, 3 * t:3 * t + 20] = 1
        gt[:2] = 255
        rgb = bg.copy()
        rgb[gt == 1] = 220
        pred = np.where(rng.random((H, W)) < 0.7, gt == 1, rng.integers(0, 2, (H, W))).astype(np.int64)
        rgbs.append(rgb), gts.append(gt), preds.append(pred)
    return rgbs, gts, preds


def _reused(arrays):
    """Each of ``arrays`` in turn, copied into one buffer (the same object every time)."""
    buf = np.empty_like(arrays[0])
    for a in arrays:
        np.copyto(buf, a)
        yield buf


def _vc(preds, gts) -> dict:
    vc = VideoConsistency((2, 4), 255, 2)
    for p, g in zip(preds, gts):
        vc.add(p, g)
    return vc.values


def test_video_consistency_with_one_reused_buffer_equals_fresh_arrays():
    """Old code: every window 1.0 with the buffer (each frame compared with itself), not the fresh arrays' values."""
    _, gts, preds = _clip()
    fresh = _vc(preds, gts)
    assert fresh[2] and max(fresh[2]) < 1.0           # the clip's predictions do change
    assert _vc(_reused(preds), _reused(gts)) == fresh
    # a fresh prediction with a reused label, and the other way round
    assert _vc(preds, _reused(gts)) == fresh
    assert _vc(_reused(preds), gts) == fresh


def test_video_consistency_does_not_hold_the_callers_arrays():
    """Writing into an array after add() does not change what the next add() compares with."""
    _, gts, preds = _clip(3)
    vc, want = VideoConsistency((2, 4), 255, 2), _vc(preds[:2], gts[:2])
    p, g = preds[0].copy(), gts[0].copy()
    vc.add(p, g)
    p[...], g[...] = preds[1], gts[1]          # the caller reuses its arrays for frame 1
    vc.add(preds[1], gts[1])
    assert vc.values == want


def _run_score(rgbs, preds, gts) -> dict:
    score = RunScore(2, 255, ['bg', 'obj'], True, True, True)
    score.start_sequence()
    for t, (rgb, pred, gt) in enumerate(zip(rgbs, preds, gts)):
        score.add(rgb, pred, gt, t % 3 == 0, 1.0, '', t > 0)
    return score.result()


@pytest.mark.parametrize('which', ['all', 'rgb', 'pred', 'gt'])
def test_run_score_with_one_reused_buffer_equals_fresh_arrays(which):
    """TC, mVC, mIoU and J&F: the same whichever inputs come in one reused buffer. Old code (all reused): TC 1.0 and
    mVC_8 1.0 where fresh arrays give 0.50 and 0.28."""
    rgbs, gts, preds = _clip()
    fresh = _run_score(rgbs, preds, gts)
    assert fresh['TC'] < 0.9 and fresh['mVC8_windows'] == 5
    args = {'rgb': rgbs, 'pred': preds, 'gt': gts}
    for k in args:
        if which in ('all', k):
            args[k] = _reused(args[k])
    assert _run_score(args['rgb'], args['pred'], args['gt']) == fresh


def test_run_score_with_one_reused_buffer_resized_for_flow(monkeypatch):
    """Frames over FLOW_MAX_SIDE: TC holds them at flow size (their own arrays), mVC the full-size masks."""
    from vidseg_ros.tools import eval_stream
    monkeypatch.setattr(eval_stream, 'FLOW_MAX_SIDE', 32)
    rgbs, gts, preds = _clip()
    fresh = _run_score(rgbs, preds, gts)
    assert _run_score(_reused(rgbs), _reused(preds), _reused(gts)) == fresh


def test_stream_sequence_keep_holds_each_prediction(monkeypatch):
    """An engine that hands out a view of one buffer for every frame: ``keep`` returns each frame's prediction
    (old code: n references to the last one)."""
    _, gts, preds = _clip(5)
    buf = np.empty_like(preds[0])

    class Engine:
        def reset(self, why):
            self.t = 0

        def step(self, rgb, stamp_ns):
            np.copyto(buf, preds[self.t])
            self.t += 1
            return SimpleNamespace(class_ids=buf, is_key=True, timings_ms={'model': 1.0}, reset_reason='')

    monkeypatch.setattr(evaluate, 'read_rgb', lambda path: np.zeros((H, W, 3), np.uint8))
    recs = [SimpleNamespace(image=f'{t}.png', label=f'{t}.png', stamp_ns=t * 50_000_000, index=t)
            for t in range(5)]
    src = SimpleNamespace(read_label=lambda rec: gts[rec.index].copy())
    score = RunScore(2, 255, ['bg', 'obj'], True, True, True)
    out = evaluate.stream_sequence(Engine(), recs, src, True, score, keep=True)
    assert all(np.array_equal(p, want) for p, want in zip(out['pred'], preds))
