"""`vidseg eval` at its boundaries: frame sizes the flow resizing rounds to nothing, the first and last frame of a
sequence, sequences of one frame, and the aggregation of scores over sequences and classes."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from support.eval_data import folder_dataset, noise_images, tiny_fpn
from vidseg_ros.tools.evaluate import break_reason, run_evaluation, sequence_timing, usual_step

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_a_one_pixel_high_wide_frame_is_scored(tmp_path):
    """1x1000 frames (a line-scan camera): scaled to the flow's 480 px they rounded to 0 rows, and OpenCV's resize
    stopped the run with '(-215:Assertion failed) inv_scale_x > 0' after the model had run."""
    label = (np.arange(1000)[None, :] % 2).astype(np.uint8)
    data = folder_dataset(tmp_path / 'd', noise_images([label] * 3), [label] * 3)
    report = run_evaluation(tiny_fpn(tmp_path / 'm.pt'), data, split='all', out_dir=tmp_path / 'ev', write_card=False)
    scores = report['intervals']['1']
    assert scores['TC_pairs'] == 2 and 0 <= scores['TC'] <= 1
    assert scores['all']['pixels'] == 3000


def _recs(stamps_s, indices=None):
    indices = range(len(stamps_s)) if indices is None else indices
    return [SimpleNamespace(stamp_ns=round(t * S), index=i) for t, i in zip(stamps_s, indices)]


def test_a_sequence_of_two_frames_is_video():
    """The shortest sequence that has a frame spacing: two frames 0.1 s apart are a 10 Hz video."""
    t = sequence_timing({'s': _recs([0.0, 0.1])}, 0.5)
    assert t['video'] and t['rate_hz'] == pytest.approx(10.0) and t['gaps'] == 0
    assert t['note'] == 'real video at 10 Hz; 0 gap(s) > 0.5 s reset the state as in the node'   # no 'spans 1k'


def test_a_one_frame_sequence_says_nothing_of_the_others():
    """A sequence of one frame has no spacing: the split's timing is that of its other sequences, whichever comes
    first."""
    one, video = _recs([0.0]), _recs([0.0, 0.1, 0.2, 5.0])
    for seqs in ({'a': one, 'b': video}, {'a': video, 'b': one}):
        t = sequence_timing(seqs, 0.5)
        assert t['video'] and t['rate_hz'] == pytest.approx(10.0) and t['gaps'] == 1


def test_one_sequence_without_frame_times_makes_the_split_no_video():
    """Stamps that never increase: that sequence's timing is unknown, so the split is not scored as video; the
    rate said is the other sequences'."""
    timeless, video = _recs([0.0, 0.0, 0.0]), _recs([0.0, 0.1, 0.2])
    for seqs in ({'a': timeless, 'b': video}, {'a': video, 'b': timeless}):
        t = sequence_timing(seqs, 0.5)
        assert not t['video'] and t['rate_hz'] == pytest.approx(10.0)
        assert t['note'].startswith('not real video (median frame rate 10 Hz')


def test_mostly_repeated_stamps_are_no_video_and_no_error():
    """A median spacing of 0 (most stamps repeated, one step forward) is not video: no division by zero."""
    for max_gap_s in (0.5, 0.0):
        t = sequence_timing({'s': _recs([0.0, 0.0, 0.0, 0.1])}, max_gap_s)
        assert not t['video'] and t['rate_hz'] == math.inf


@pytest.mark.parametrize('max_gap_s,gaps', [(0.0, 1), (-1.0, 1), (0.5, 2), (0.1, 2), (0.09, 5)])
def test_gaps_count_the_node_resets(max_gap_s, gaps):
    """10 Hz, a 2 s hole and a stamp 0.05 s back: max_gap_s 0 (or below) resets only backwards, as the node does;
    a gap of exactly max_gap_s (0.1) is none."""
    t = sequence_timing({'s': _recs([0.0, 0.1, 0.2, 2.2, 2.15, 2.25])}, max_gap_s)
    assert t['gaps'] == gaps


@pytest.mark.parametrize('max_gap_s', [0.3, 0.5, 10.0, 60.0, 0.0])
def test_the_gaps_counted_are_the_node_resets_on_the_same_stamps(max_gap_s):
    """timing['gaps'] ('N gap(s) reset the state as in the node'): the node's key-frame policy fed the same stamps
    resets exactly as often. Steps of exactly max_gap_s and one ns more, a repeated stamp (no reset) and a step
    back."""
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.policy import KeyframePolicy
    gap = round(max_gap_s * S)
    steps = [100_000_000, gap, gap + 1, 0, -1, 100_000_000, gap + 1, gap, 0, 0, 100_000_000]
    stamps = [T0 + sum(steps[:i]) for i in range(len(steps) + 1)]
    recs = [SimpleNamespace(stamp_ns=t, index=i) for i, t in enumerate(stamps)]
    policy = KeyframePolicy(EngineConfig(max_gap_s=max_gap_s))
    resets = sum(policy.decide(t, (4, 4)).reset_reason in ('gap', 'backwards') for t in stamps)
    assert resets == (3 if max_gap_s else 1)
    assert sequence_timing({'s': recs}, max_gap_s)['gaps'] == resets


def test_without_a_gap_limit_any_forward_stamps_are_video():
    """max_gap_s 0: the node resets only when stamps go backwards, so a 1 Hz split keeps its state: video."""
    t = sequence_timing({'s': _recs([0.0, 1.0, 2.0, 3.0])}, 0.0)
    assert t['video'] and t['gaps'] == 0 and t['rate_hz'] == pytest.approx(1.0)


def test_a_repeated_frame_index_is_no_step():
    """The usual index step is the median of the steps forward: frames that share an index (a frame written twice)
    do not make a step of 1 a missing frame."""
    recs = _recs([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 1, 2, 2])
    assert usual_step(recs) == 1.0
    assert [break_reason(a, b, None, None, usual_step(recs), 0.5) for a, b in zip(recs, recs[1:])] == [''] * 5


def _feed(score, preds, gts, follows=None, keys=None, ms=None, resets=None):
    """One sequence into ``score``: noise frames, the given predictions and labels."""
    rng = np.random.default_rng(len(preds))
    score.start_sequence()
    for t, (pred, gt) in enumerate(zip(preds, gts)):
        score.add(rng.integers(0, 255, (*pred.shape, 3), np.uint8), pred, gt, keys[t] if keys else t == 0,
                  ms[t] if ms else 1.0, resets[t] if resets else '', t > 0 if follows is None else follows[t])


def test_temporal_scores_are_the_mean_over_sequences_and_never_span_two():
    """TC and mVC_n: each sequence's mean over its pairs / windows, then the mean over sequences (a long sequence
    does not outweigh a short one); no pair or window spans the end of one sequence and the start of the next.
    Sequence a (9 frames): every prediction right and constant, TC 1 over 8 pairs, VC8 1 over 2 windows; sequence b
    (8 frames, constant ground truth): the whole prediction flips every frame, TC 0 over 7 pairs, VC8 0 over 1."""
    from vidseg_ros.tools.eval_stream import RunScore
    zeros, ones = np.zeros((16, 16), np.uint8), np.ones((16, 16), np.uint8)
    score = RunScore(2, 255, ['bg', 'obj'], True, True, True)
    _feed(score, [zeros] * 9, [zeros] * 9)
    _feed(score, [ones if t % 2 == 0 else zeros for t in range(8)], [ones] * 8)
    r = score.result()
    assert (r['TC_pairs'], r['TC']) == (8 + 7, 0.5)
    assert (r['mVC8_windows'], r['mVC8']) == (2 + 1, 0.5) and r['mVC16_windows'] == 0 and 'mVC16' not in r
    # J as DAVIS: each sequence's mean over its frames, then over sequences (a: 1; b: 1 and 0 every other frame, 0.5;
    # over all 17 frames it would be 13 / 17). F is 1 on every frame: neither mask has a boundary inside the frame
    assert (r['J'], r['F'], r['J&F']) == (0.75, 1.0, 0.875)
    assert r['frames'] == 17 and r['key_frames'] == 2 and r['all']['pixels'] == 17 * 256


def test_a_sequence_without_a_pair_is_left_out_of_tc_not_scored_0():
    """A one-frame sequence has no TC pair and no window: the split's TC is the other sequences', and the counts
    say so."""
    from vidseg_ros.tools.eval_stream import RunScore
    zeros = np.zeros((16, 16), np.uint8)
    score = RunScore(2, 255, ['bg', 'obj'], True, True, True)
    _feed(score, [zeros], [zeros])
    _feed(score, [zeros] * 3, [zeros] * 3)
    _feed(score, [zeros], [None])
    r = score.result()
    assert (r['TC_pairs'], r['TC'], r['mVC8_windows']) == (2, 1.0, 0) and 'mVC8' not in r


def test_the_plots_show_the_scores_in_percent_and_the_confusion_row_normalised(tmp_path, monkeypatch):
    """What the figures draw (only their look was unpinned): per-class IoU bars in percent (a class with no score
    at 0, marked n/a), the accuracy-latency points at (ms, mIoU %), and each ground-truth row of the confusion
    matrix as fractions of that row (a row without pixels all 0, not a division by zero)."""
    pytest.importorskip('matplotlib')
    from vidseg_ros.tools import eval_report
    figs = {}
    monkeypatch.setattr(eval_report, '_save', lambda fig, path: figs.setdefault(path.name, fig) and path)
    scores = {'mIoU': 0.5, 'per_class_iou': {'road': 0.9, 'car': 0.1, 'boat': None}}
    report = {'model': 'm.pt', 'labelled': True, 'classes': ['road', 'car', 'boat'],
              'intervals': {'1': {'latency_ms': 10.0, 'all': scores, 'current': {'mIoU': float('nan')},
                                  'confusion': [[6, 2, 0], [1, 3, 0], [0, 0, 0]]}}}
    eval_report.write_plots(report, tmp_path)
    bars = figs['per_class_iou.png'].axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([90.0, 10.0, 0.0])
    line = figs['accuracy_latency.png'].axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [10.0] and list(line.get_ydata()) == [50.0]
    shown = figs['confusion.png'].axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(shown), [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 0.0]])


def _report(per_class_iou, latency_key_ms=12.0):
    scores = {'mIoU': 0.5, 'mAcc': 0.5, 'pixel_acc': 0.5, 'per_class_iou': per_class_iou}
    return {'model': 'm.pt', 'labelled': True, 'classes': list(per_class_iou), 'data': 'd', 'split': 'all',
            'sequences': 1, 'device': 'cpu', 'intervals': {'1': {'latency_ms': 12.0, 'latency_key_ms': latency_key_ms,
                                                                 'latency_current_ms': None, 'all': scores}}}


def test_the_card_and_table_show_a_missing_score_as_a_dash(tmp_path):
    """A class without a score (None in per_class_iou, as scores give it) and a latency without frames (None, as
    metrics.json holds it) are '-', not a TypeError; the table's separator row has a cell for each of its 10
    columns (markdown takes no table otherwise); a licence of exactly CARD_LICENCE characters is kept whole; a card
    copy goes into a folder not made yet."""
    from vidseg_ros.tools.eval_report import CARD_LICENCE, card_text, summary_table, write_card_file
    report = _report({'road': 0.9, 'boat': None}, latency_key_ms=None)
    head, sep, row = summary_table(report).splitlines()
    assert head.count('|') == sep.count('|') == row.count('|') == 11
    assert row.endswith('| 12.0 (- / -) |')
    licence = 'x' * CARD_LICENCE
    card = card_text(report, {'classes': ['road', 'boat'], 'provenance': {'licence': licence}})
    assert 'Per-class IoU (interval 1): road 90.0, boat -' in card and f'\n{licence}\n' in card
    paths = write_card_file(report, {'classes': ['road', 'boat']}, tmp_path, tmp_path / 'new' / 'card.md')
    assert (tmp_path / 'new' / 'card.md').read_text() == paths[0].read_text()
