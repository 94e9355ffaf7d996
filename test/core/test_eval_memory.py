"""`vidseg eval` scores each frame as it streams: memory does not grow with a sequence's length.

Every prediction and label of a sequence (full size), its frames at flow size and, for the session, every flow
were held until the sequence was scored: peak RSS 586 MB for 100 frames of 640x480, 1351 MB for 400 (2.6 MB a
frame; a 3000-frame 1080p drive ~15 GB); now 349 and 343 MB, with the same metrics.json. The streamed scores
equal the definitions (``metrics.video_consistency``, ``j_and_f``, ``temporal_consistency``) frame for frame.
"""
import math
import tracemalloc

import cv2
import numpy as np
import pytest

from support.eval_data import folder_dataset, tiny_fpn
from vidseg_ros.tools.evaluate import EvalSession, run_evaluation
from vidseg_ros.training.metrics import VideoConsistency, j_and_f, temporal_consistency, video_consistency

H, W = 240, 320


def _model(path):
    return tiny_fpn(path)


def _data(root, n, labelled=None, hole_before=None):
    """One sequence of ``n`` H x W frames at 20 Hz (a block moving right on a blurred noise background), labelled
    (all, or the indices in ``labelled``); ``hole_before``: frames from this one on are 2 s later (a time gap)."""
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (9, 9), 3)
    images, labels, stamps = [], [], []
    for i in range(n):
        mask = np.zeros((H, W), np.uint8)
        x = (5 * i) % (W - 100)
        mask[60:160, x:x + 100] = 1
        mask[:4] = 255                                          # a void band
        img = bg.copy()
        img[mask == 1] = 220
        images.append(img)
        labels.append(mask if labelled is None or i in labelled else None)
        stamps.append(i * 50_000_000 + (2_000_000_000 if hole_before is not None and i >= hole_before else 0))
    return folder_dataset(root, images, labels, stamps)


def _peak_bytes(fn) -> int:
    """Peak numpy / Python memory ``fn()`` allocates above what was held before (tracemalloc: numpy arrays,
    OpenCV's results and Python objects; not torch's own allocator, which holds no frame of the sequence)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_eval_peak_memory_does_not_grow_with_the_sequence(tmp_path):
    """16 vs 64 frames of 320x240 (tracemalloc): the old code's peak grew by 11.8 labels' bytes a frame (the
    prediction, the label, the frame and the flow at flow size: 0.9 MB), now by 0.004 (the per-frame numbers);
    one label's bytes a frame is the bound."""
    ckpt = _model(tmp_path / 'm.pt')
    short, long = _data(tmp_path / 'short', 16), _data(tmp_path / 'long', 64)
    run = lambda data, out: run_evaluation(ckpt, data, split='all', out_dir=tmp_path / out,   # noqa: E731
                                           write_card=False, key_intervals=[1])
    run(short, 'warm')                                  # imports, the model, matplotlib: once, outside the count
    peaks = {n: _peak_bytes(lambda: run(data, f'e{n}')) for n, data in ((16, short), (64, long))}
    growth = (peaks[64] - peaks[16]) / (64 - 16)
    assert growth < H * W, (peaks, f'{growth / (H * W):.1f} labels a frame')
    report = run(long, 'check')['intervals']['1']
    assert report['TC_pairs'] == 63 and report['mVC16_windows'] > 0 and report['frames'] == 64


def test_eval_session_keeps_outputs_only_when_asked(tmp_path):
    """``vidseg eval`` keeps no frame (run_evaluation: keep_outputs False); the bench's session keeps the last
    setting's predictions and labels, and its scores are the same."""
    ckpt, data = _model(tmp_path / 'm.pt'), _data(tmp_path / 'd', 10)
    lean = EvalSession(ckpt, data, split='all', keep_outputs=False)
    kept = EvalSession(ckpt, data, split='all')
    scores = [{k: v for k, v in ev.score(keyframe_interval=1).items() if not k.startswith('latency')}
              for ev in (lean, kept)]
    assert scores[0] == scores[1] and 'mVC8' in scores[0]
    assert set(lean.runs[0]) == {'is_key', 'ms', 'resets', 'breaks'}
    assert len(kept.runs[0]['pred']) == 10 and kept.runs[0]['pred'][0].shape == (H, W)


def test_streamed_scores_equal_the_definitions(tmp_path):
    """TC of every pair, mVC_8 / mVC_16 of every window of labelled frames that spans no break, J&F of the
    labelled frames, from the kept predictions by the definitions in metrics: the streamed numbers are the same
    (frames 5 and 25 unlabelled, a 2 s hole before frame 12)."""
    from vidseg_ros.data.images import read_rgb
    from vidseg_ros.tools.eval_stream import FLOW_MAX_SIDE
    labelled = set(range(30)) - {5, 25}
    data = _data(tmp_path / 'd', 30, labelled, hole_before=12)
    ev = EvalSession(_model(tmp_path / 'm.pt'), data, split='all')
    step, rng = ev.seg.step, np.random.default_rng(0)

    def noisy(rgb, *a, **k):      # the untrained model's masks are constant: the block, with 10 % of pixels flipped
        res = step(rgb, *a, **k)
        res.class_ids = ((rgb[..., 0] > 128) ^ (rng.random(rgb.shape[:2]) < 0.1)).astype(np.uint8)
        return res
    ev.seg.step = noisy
    res = ev.score(keyframe_interval=1)
    assert 0.5 < res['TC'] < 0.95 and 0.1 < res['mVC8'] < 0.9 and 0.1 < res['J&F'] < 0.9, res
    preds, gts = ev.runs[0]['pred'], ev.runs[0]['gt']
    assert max(H, W) <= FLOW_MAX_SIDE and ev.timing['breaks'] == {'gap': 1}
    frames = [read_rgb(r.image) for r in next(iter(ev.seqs.values()))]
    tc = [temporal_consistency(preds[t - 1:t + 1], frames[t - 1:t + 1], 2) for t in range(1, 30) if t != 12]
    assert res['TC_pairs'] == 28 and res['TC'] == np.mean([v for v in tc if not math.isnan(v)])
    for n in (8, 16):
        windows = [video_consistency(preds[s:s + n], gts[s:s + n], n, 255) for s in range(30 - n + 1)
                   if all(t in labelled for t in range(s, s + n)) and not s < 12 < s + n]
        windows = [v for v in windows if not math.isnan(v)]
        assert res[f'mVC{n}_windows'] == len(windows)
        if windows:
            assert res[f'mVC{n}'] == np.mean(windows)
    jf = j_and_f([gts[t] for t in sorted(labelled)], [preds[t] for t in sorted(labelled)], ignore_index=255)
    assert res['J&F'] == jf['J&F'] and res['J'] == jf['J'] and res['F'] == jf['F']


@pytest.mark.parametrize('seed', range(6))
def test_video_consistency_streamed_equals_windowed(seed):
    """metrics.VideoConsistency (per-pixel run lengths, two frames held) gives video_consistency's value for each
    window, on random masks of few classes with void and restarts."""
    rng = np.random.default_rng(seed)
    h, w, k = rng.integers(1, 12), rng.integers(1, 12), int(rng.integers(2, 4))
    frames = int(rng.integers(1, 40))
    gts = [rng.integers(0, k, (h, w)).astype(np.uint8) for _ in range(frames)]
    for t in range(1, frames):                     # ground truth and predictions mostly stay, sometimes change
        keep = rng.random((h, w)) < 0.9
        gts[t] = np.where(keep, gts[t - 1], gts[t])
    gts = [np.where(rng.random((h, w)) < 0.05, 255, g).astype(np.uint8) for g in gts]
    preds = [np.where(rng.random((h, w)) < 0.95, np.minimum(g, k - 1), rng.integers(0, k, (h, w))) for g in gts]
    restarts = set(rng.choice(frames, size=min(frames, 3), replace=False).tolist())
    vc = VideoConsistency((2, 3, 8), 255)
    for t in range(frames):
        if t in restarts:
            vc.restart()
        vc.add(preds[t], gts[t])
    starts = sorted(restarts | {0})
    for n in (2, 3, 8):
        want = []
        for a, b in zip(starts, starts[1:] + [frames]):
            for s in range(a, b - n + 1):
                v = video_consistency(preds[s:s + n], gts[s:s + n], n, 255)
                if not math.isnan(v):
                    want.append(v)
        assert vc.values[n] == want
