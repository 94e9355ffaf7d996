"""``vidseg eval``: stream a labelled video split through the engine and score it.

Frames go through :class:`~vidseg_ros.engine.stream.StreamSegmenter` exactly as on the robot
(resize to the checkpoint's ``input_hw``, key-frame cache or recurrent state), and predictions are
compared with the labels at the labels' own resolution. For a key-frame model every key interval
is run separately and scored on all, key and current frames, with the model latency per frame; a
per-frame or recurrent model runs once. Temporal consistency (TC) uses optical flow between the
frames; mVC uses the dense ground truth of a 15 Hz (CamVid val) or fully labelled (DAVIS) stream.
Both are scored only within runs of consecutive frames (:func:`break_reason`): a time gap that
resets the state, a stamp going backwards, a missing frame index or a frame size change is a break
that no TC pair and no mVC window spans; the counts scored are reported (``TC_pairs``,
``mVC8_windows``, ``mVC16_windows``, ``timing['breaks']``).

Frames carry their time stamps (an extracted dataset's ``index.csv``, else the frame number over the
layout's source rate: CamVid 30 Hz, DAVIS 24 Hz), so ``max_gap_s`` resets happen as in the node. Only
a split that is real video (every sequence's median frame spacing <= ``max_gap_s``) gets key intervals
> 1, TC and mVC; for anything else (CamVid train: 1 Hz) they are skipped with a warning. CamVid val is
a 15 Hz run of every 2nd source frame, so key interval k there spans 2k source frames.

Every frame is scored as it streams and then let go (:mod:`vidseg_ros.tools.eval_stream`): memory does not grow
with a sequence's length.

Output in ``out_dir``: ``metrics.json``, ``accuracy_latency.png``, ``per_class_iou.png``,
``confusion.png`` and ``model_card.md`` (copied to ``card`` only when given). ``vidseg eval`` gives
every run its own folder (:func:`new_run_dir`), so earlier results are never overwritten.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.datasets.layouts import FrameSource
from vidseg_ros.data.datasets.public_layouts import open_source
from vidseg_ros.text import clip
from vidseg_ros.files import check_replaceable
from vidseg_ros.tools.eval_stream import RunScore
from vidseg_ros.data.video import check_frame_sizes
from vidseg_ros.training.metrics import json_ready

log = logging.getLogger(__name__)


def open_eval_source(data: str | Path, dataset: str = 'auto', split: str = 'val') -> FrameSource:
    """The labelled frames to score, refusing an empty selection.

    CamVid: ``split`` names the split folder, optionally ``:SEQ1,SEQ2`` (whole drives). DAVIS:
    ``all``/``val``, ``head``, ``tail`` or sequence names (``seq1,seq2[:tail]``). An extracted dataset
    (``index.csv``): ``all``/``val`` or sequence names.
    """
    src = _eval_source(Path(data), dataset, split)
    if not any(r.label is not None for r in src.records):
        raise ValueError(f'{data} ({dataset}, split {split!r}): no labelled frames to evaluate on')
    # from the headers, before the run: a 20000x20000 frame and label were decoded (15.5 GB after 12 min)
    check_frame_sizes(src.records)
    return src


def _eval_source(root: Path, dataset: str, split: str) -> FrameSource:
    """The split to score, opened as training opens its data (``public_layouts.open_source``)."""
    return open_source(root, split, dataset)


def sequence_timing(seqs: dict[str, list], max_gap_s: float) -> dict:
    """Whether the sequences are real video, at what rate, and where the node would reset.

    A sequence is video when its median stamp spacing is at most ``max_gap_s`` (the node would keep
    temporal state across it); ``gaps`` counts the spacings above it (or going backwards): each is a
    reset in the node and here. Stamps that never increase (an index without times) make the timing
    unknown, which is not video.
    """
    rates, steps, gaps, video = [], [], 0, bool(seqs)
    for recs in seqs.values():
        if len(recs) < 2:
            continue
        dt = np.diff([r.stamp_ns for r in recs]).astype(np.float64) / 1e9   # as the node: * 1e-9 rounds 0.3 s up
        if not (dt > 0).any():
            video = False
            continue
        med = float(np.median(dt))
        rates.append(1.0 / med if med > 0 else math.inf)
        steps.append(float(np.median(np.diff([r.index for r in recs]))))
        gaps += int(((dt > max_gap_s) | (dt < 0)).sum()) if max_gap_s > 0 else int((dt < 0).sum())
        video &= 0 < med <= max_gap_s if max_gap_s > 0 else med > 0
    video &= bool(rates)
    rate = float(np.median(rates)) if rates else math.nan
    step = float(np.median(steps)) if steps else math.nan
    return {'video': video, 'rate_hz': rate, 'source_frames_per_frame': step, 'gaps': gaps,
            'max_gap_s': max_gap_s, 'note': _timing_note(video, rate, step, gaps, max_gap_s)}


def _timing_note(video: bool, rate: float, step: float, gaps: int, max_gap_s: float) -> str:
    if not video:
        rate_text = 'frame times unknown' if math.isnan(rate) else f'median frame rate {rate:.3g} Hz'
        return (f'not real video ({rate_text}, state reset beyond {max_gap_s:g} s): '
                'key interval 1 only, no TC / mVC')
    per = f'; key interval k spans {step:g}k source frames' if step > 1 else ''
    return f'real video at {rate:.3g} Hz{per}; {gaps} gap(s) > {max_gap_s:g} s reset the state as in the node'


BREAKS = {'resize': ('size change', 'size changes'), 'gap': ('time gap', 'time gaps'),
          'backwards': ('stamp going backwards', 'stamps going backwards'),
          'missing': ('missing frame index', 'missing frame indices')}   # reason: (singular, plural)


def usual_step(recs: list) -> float:
    """The sequence's usual (median) frame index step: a larger one is a missing frame (:func:`break_reason`)."""
    steps = np.diff(np.array([r.index for r in recs], dtype=np.int64))
    return float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0


def break_reason(prev, rec, prev_hw, hw, usual: float, max_gap_s: float) -> str:
    """Why frame ``rec`` does not follow ``prev`` (a BREAKS key), '' when it does; the sizes None: not known (no
    size change).

    Frame t follows frame t-1 unless: its size differs (the decoded (H, W); the engine resets there), its stamp
    goes backwards or is more than ``max_gap_s`` later (the engine resets; ``max_gap_s`` <= 0: only backwards),
    or frames are missing between them (an index step larger than the sequence's ``usual``, median, step: CamVid
    val's every 2nd source frame is its usual step). TC pairs and mVC windows never span a break; the runs of
    consecutive frames between breaks are ``EvalSession.temporal_runs``.
    """
    dt = (rec.stamp_ns - prev.stamp_ns) / 1e9     # as the node (policy.py): * 1e-9 rounds 300 ms above 0.3 s
    return ('resize' if prev_hw is not None and hw is not None and tuple(hw) != tuple(prev_hw) else
            'backwards' if dt < 0 else
            'gap' if max_gap_s > 0 and dt > max_gap_s else
            'missing' if rec.index - prev.index > usual else '')


def _breaks_text(breaks: dict) -> str:
    n = sum(breaks.values())
    parts = ', '.join(f'{c} {BREAKS.get(k, (k, k))[c > 1]}' for k, c in sorted(breaks.items()) if c)
    return f'{n} break{"s" if n > 1 else ""}: {parts}' if n else 'no breaks'


def temporal_note(timing: dict, result: dict, labelled: bool) -> str:
    """What the temporal metrics of a real-video split were scored on, for the timing note: pairs and
    windows within runs of consecutive frames, and the breaks between those runs."""
    breaks = timing.get('breaks', {})
    if not result.get('TC_pairs'):
        return f'no TC / mVC: no two consecutive frames ({_breaks_text(breaks)})'
    text = f'TC over {result["TC_pairs"]} frame pair(s)'
    if labelled:
        w8, w16 = result.get('mVC8_windows', 0), result.get('mVC16_windows', 0)
        text += (f', mVC8 / mVC16 over {w8} / {w16} window(s)' if w8 else
                 ', no mVC (no window of 8 consecutive labelled frames)')
    if sum(breaks.values()):
        text = f'TC / mVC within runs of consecutive frames ({_breaks_text(breaks)}): {text}'
    return text


def _labels_scored(meta: dict, src: FrameSource, seqs: dict) -> bool:
    """Whether the data's labels are scored against the model (else label-free metrics only, said here):
    the class names are the same, or the data names none but has labels (imported without
    ``--class-names``: training numbers such classes, and scores them), whose values are taken as the
    model's class ids."""
    if not any(r.label for recs in seqs.values() for r in recs):
        # open_eval_source refuses data without labels: only --max-frames can leave none. Said before, it was
        # 'the data has no labels', and not at all where the data names its classes (mIoU null, no word).
        log.warning('no labelled frame among the first frames of each sequence that --max-frames leaves: '
                    'label-free metrics (TC, latency) only; raise --max-frames to score labels')
        return False
    model = list(meta.get('classes', []))
    if src.class_names:
        if model == list(src.class_names):
            return True
        log.warning("model classes %s differ from the data's %s: label-free metrics (TC, latency) only",
                    clip(str(model)), clip(str(list(src.class_names))))
        return False
    log.warning("the data names no classes: its label values are scored as the model's class ids (%s); "
                'import them with `vidseg label-import --class-names` to have the names checked',
                clip(', '.join(f'{i} {n}' for i, n in enumerate(model))))
    return True


def stream_sequence(seg, recs: list, src: FrameSource, with_labels: bool, score: RunScore, clip_len: int = 0,
                    max_gap_s: float = 0.0, keep: bool = False) -> dict:
    """Run one sequence through a fresh engine state, each frame scored (``score``) as it comes and then let go.

    Returns per frame: key flags, model ms, the engine's reset reasons and the breaks (:func:`break_reason`; the
    first frame's is 'start'), and with ``keep`` copies of the predictions and labels (full size, 0.6 MB a 640x480
    frame: diagnostics of a short split only; copies: an engine handing out one buffer for every frame had them
    all come back as the last one). ``clip_len`` > 0 resets the temporal state every ``clip_len``
    frames (the recurrent UNet's evaluation protocol uses clips of 12); 0 streams the whole sequence as the node
    does.
    """
    seg.reset('new sequence')
    score.start_sequence()
    out = {'is_key': [], 'ms': [], 'resets': [], 'breaks': []} | ({'pred': [], 'gt': []} if keep else {})
    usual, prev, prev_hw = usual_step(recs), None, None
    for i, rec in enumerate(recs):
        if clip_len and i and i % clip_len == 0:
            seg.reset('clip')
        rgb = read_rgb(rec.image)
        res = _step(seg, rgb, rec)
        gt = _label_of(src, rec, rgb.shape[:2]) if with_labels else None
        why = 'start' if prev is None else break_reason(prev, rec, prev_hw, rgb.shape[:2], usual, max_gap_s)
        ms = res.timings_ms.get('model', math.nan)
        score.add(rgb, res.class_ids, gt, res.is_key, ms, res.reset_reason, not why)
        kept = (np.array(res.class_ids), None if gt is None else np.array(gt)) if keep else (None, None)
        for k, v in (('is_key', res.is_key), ('ms', ms), ('resets', res.reset_reason), ('breaks', why),
                     ('pred', kept[0]), ('gt', kept[1])):
            if k in out:
                out[k].append(v)
        prev, prev_hw = rec, rgb.shape[:2]
    return out


def _step(seg, rgb: np.ndarray, rec):
    """``seg.step`` on ``rec``'s frame (with its stamp: the node's gap / backwards resets need it); a frame
    the model gives NaN or inf on stops the run with an error naming its file (the engine knows no file)."""
    from vidseg_ros.engine.base import NonFiniteOutput
    try:
        return seg.step(rgb, rec.stamp_ns)
    except NonFiniteOutput as e:
        raise NonFiniteOutput(f'frame {clip(rec.image)}: {e}') from e


def _label_of(src, rec, hw: tuple[int, int]) -> np.ndarray | None:
    """``rec``'s label, refused (naming both files) when it is not its frame's size: scoring failed later with
    'prediction and ground truth sizes differ: (6144,) vs (1536,)', naming neither. None for a frame without one."""
    gt = src.read_label(rec)
    if gt is not None and gt.shape[:2] != tuple(hw):
        raise ValueError(f'label {clip(rec.label)} is {gt.shape[1]}x{gt.shape[0]} but its frame {clip(rec.image)} '
                         f'is {hw[1]}x{hw[0]} (as displayed); labels must have their frame\'s size')
    return gt


class EvalSession:
    """One model and one labelled split, opened once; :meth:`score` runs and scores an engine setting.

    ``vidseg eval`` scores its key intervals with it; ``bench/keyframe_curve.py`` scores fixed and
    adaptive key-frame policies the same way. Every frame is scored as it streams (:class:`eval_stream.RunScore`):
    memory does not grow with a sequence's length, except with ``keep_outputs``, which keeps the last setting's
    predictions and labels in ``runs`` (each ``pred`` and ``gt``, full size: the bench compares them; ``vidseg eval``
    keeps none).
    """

    def __init__(self, model: str | Path, data: str | Path, dataset: str = 'auto', split: str = 'val',
                 max_frames: int = 0, device: str = 'cpu', clip_len: int = 0, max_gap_s: float | None = None,
                 keep_outputs: bool = True):
        from vidseg_ros.engine.devices import resolve_device
        from vidseg_ros.engine.base import EngineConfig
        from vidseg_ros.engine.stream import StreamSegmenter, resolve_model
        from vidseg_ros.models.checkpoint import load_checkpoint
        # Every input is checked before the model is built, so a mistake is the only line on stderr (building
        # an untrained model logs a warning first); a .pt file is read once, here.
        self.path = resolve_model(str(model))
        if not self.path.endswith('.onnx'):   # onnxruntime's GPU providers need no CUDA in torch
            resolve_device(device)
        loaded = load_checkpoint(self.path) if self.path.endswith('.pt') else None
        self.device, self.clip_len, self.keep_outputs = device, clip_len, keep_outputs
        self.gap = EngineConfig().max_gap_s if max_gap_s is None else float(max_gap_s)
        self.src = open_eval_source(data, dataset, split)
        config = self.config(keyframe_interval=1)
        self.seg = (StreamSegmenter(*loaded, config, name=Path(self.path).name) if loaded
                    else StreamSegmenter.from_checkpoint(config))
        if loaded and not all(self.seg.net_hw):     # as from_checkpoint does: a model giving NaN fails here, not
            self.seg.check_output()                 # on every frame after the data is opened
        self.seqs = {k: (v[:max_frames] if max_frames else v) for k, v in self.src.sequences().items()}
        self.with_labels = _labels_scored(self.seg.meta, self.src, self.seqs)
        self.timing = sequence_timing(self.seqs, self.gap)
        self.names = list(self.seg.meta.get('classes', []))
        if self.with_labels:     # ids the model has no class for are left out of the scores: counted, said once
            from vidseg_ros.training.label_ids import counting_ids_beyond
            self.src = counting_ids_beyond(self.src, len(self.names), self.seg.meta.get('ignore_index'))
        self.label_ids_beyond: dict | None = None   # after the first score(): IdsBeyondIgnored.beyond_summary
        self.temporal_runs: list | None = None   # per sequence: runs [start, stop) of consecutive frames
        self.runs: list[dict] = []

    def config(self, **settings):
        """The engine settings of this session (model, device, max_gap_s) with ``settings``."""
        from vidseg_ros.engine.base import EngineConfig
        return EngineConfig(model=self.path, device=self.device, max_gap_s=self.gap, **settings)

    def score(self, **settings) -> dict:
        """Stream every sequence with these engine settings (e.g. ``keyframe_interval=5`` or
        ``keyframe_policy='adaptive', keyframe_threshold=0.2``) and score it (:class:`eval_stream.RunScore`)."""
        self.seg.update_config(self.config(**settings))
        score = RunScore(len(self.names), self.seg.meta.get('ignore_index'), self.names, len(self.names) == 2,
                         self.timing['video'], self.with_labels and bool(self.seqs))
        runs = [stream_sequence(self.seg, recs, self.src, self.with_labels, score, self.clip_len, self.gap,
                                self.keep_outputs) for recs in self.seqs.values()]
        first = self.temporal_runs is None
        if first:      # the breaks depend on the frames only (their stamps, indices and decoded sizes)
            self.temporal_runs = [_runs_of(r['breaks']) for r in runs]
            breaks: dict[str, int] = {}
            for r in runs:
                for why in r['breaks'][1:]:
                    if why:
                        breaks[why] = breaks.get(why, 0) + 1
            self.timing['breaks'] = breaks
        self.runs = runs      # the last setting's per-frame outputs (key flags, resets) for diagnostics
        result = score.result()
        if first and self.timing['video']:     # the counts depend on the data only: the same every setting
            self.timing['note'] = f'{self.timing["note"]}; {temporal_note(self.timing, result, self.with_labels)}'
        if first and hasattr(self.src, 'beyond_summary'):   # every label has been read once now
            self.label_ids_beyond = _ids_beyond(self.src, result['all']['pixels'])
        return result


def _runs_of(breaks: list[str]) -> list[tuple[int, int]]:
    """The runs ``[start, stop)`` of consecutive frames from each frame's break (:func:`break_reason`)."""
    starts = [t for t, why in enumerate(breaks) if t == 0 or why]
    return list(zip(starts, starts[1:] + [len(breaks)]))


def _ids_beyond(src, scored_pixels: int) -> dict:
    """What ``src`` (``label_ids.IdsBeyondIgnored``) counted of label ids beyond the model's classes, warned
    about once when there are any: those pixels are in no row of the confusion matrix (an 11-class model on
    labels 0..19, a stray 200), so the scores say nothing of them."""
    summary = src.beyond_summary(scored_pixels)
    if summary['pixels']:
        fix = ('name that class in dataset.yaml classes, or re-import the labels with vidseg label-import --map '
               'FROM:TO' if src.class_names else
               "are the labels numbered as the model's classes? map them with vidseg label-import --map FROM:TO, "
               'or evaluate a model of their classes')
        log.warning('%s', src.beyond_text(summary, 'were left out of mIoU, mAcc and pixel accuracy', fix))
    return summary


def run_evaluation(model: str | Path, data: str | Path, dataset: str = 'auto', split: str = 'val',
                   out_dir: str | Path = 'runs/eval', key_intervals: list[int] | None = None,
                   max_frames: int = 0, write_card: bool = True, device: str = 'cpu',
                   threads: int = 1, clip_len: int = 0, card: str | Path | None = None,
                   max_gap_s: float | None = None) -> dict:
    """Evaluate ``model`` (checkpoint/export path or shipped name) on a labelled video split.

    Args:
        model: ``models/camvid_keyframe_fpn.pt``, a bare shipped name, or an exported file.
        data: dataset folder (CamVid root or DAVIS root).
        dataset: ``camvid``, ``davis`` or ``auto``.
        split: CamVid split, or DAVIS ``all``/``tail``/sequence list.
        out_dir: where JSON, plots and the card go.
        key_intervals: key-frame intervals to run (key-frame models only; others run interval 1).
        max_frames: cap on frames per sequence (0 = all).
        write_card: write ``model_card.md`` in ``out_dir``.
        card: also write the card here (e.g. ``models/<name>.md``); never done implicitly.
        device: engine device.
        threads: torch CPU threads (1 gives the steadiest latency on a shared machine; 0 = as is).
        clip_len: reset temporal state every this many frames (0 = stream whole sequences).
        max_gap_s: the node's setting (None = its default): a larger stamp gap resets the state.
    """
    import torch
    from vidseg_ros.tools.eval_report import write_card_file, write_plots
    if card is not None and Path(card).suffix.lower() != '.md':
        # a card is markdown: anything else is a slip (e.g. the model's own path, which it would replace)
        raise ValueError(f'--card is where the model card (markdown) goes, e.g. models/<name>.md; got '
                         f'{str(card)[-200:]}')
    if card is not None:
        check_replaceable(card)     # a FIFO or a device there is said before the run, not after it
    if threads > 0:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = EvalSession(model, data, dataset, split, max_frames, device, clip_len, max_gap_s, keep_outputs=False)
    seg, timing = ev.seg, ev.timing
    intervals = sorted(set(key_intervals or [1, 2, 5, 10])) if seg.kind == 'keyframe' else [1]
    if not timing['video']:
        log.warning('%s (split %s) is %s', data, split, timing['note'])
        intervals = [1]
    results = {}
    t0 = time.perf_counter()
    for k in intervals:
        results[str(k)] = ev.score(keyframe_interval=k)
        if timing['video'] and len(results) == 1:   # the note now says what TC / mVC were scored on
            log.info('%s (split %s): %s', data, split, timing['note'])
        log.info('interval %d: mIoU %s TC %.4f latency %.1f ms', k,
                 f'{results[str(k)].get("mIoU", math.nan):.4f}', results[str(k)].get('TC', math.nan),
                 results[str(k)]['latency_ms'])
    report = {'model': str(ev.path), 'arch': seg.meta.get('arch'), 'kind': seg.kind,
              'arch_config': seg.meta.get('arch_config'), 'data': str(data), 'split': split,
              'sequences': len(ev.seqs), 'input_hw': seg.meta.get('input_hw'), 'device': device,
              'labelled': ev.with_labels, 'classes': ev.names, 'intervals': results, 'clip_len': clip_len,
              'label_ids_beyond_classes': ev.label_ids_beyond,
              'timing': timing,
              'seconds': time.perf_counter() - t0}
    # strict JSON: an undefined score (k=1 has no current frames, a split without a scored pixel) is null; a bare
    # NaN, as json.dumps writes it, is refused by JSON readers other than Python's (jq, JavaScript)
    (out_dir / 'metrics.json').write_text(json.dumps(json_ready(report), indent=1, default=_json_default,
                                                     allow_nan=False))
    plots = write_plots(report, out_dir)
    report['plots'] = [str(p) for p in plots]
    if write_card or card:
        report['card'] = [str(p) for p in write_card_file(report, seg.meta, out_dir, card)]
    return report


def new_run_dir(parent: str | Path, name: str) -> Path:
    """``parent/<name>-<n>`` with the first unused n (1, 2, ...), created: one folder per run."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            path = parent / f'{name}-{n}'
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return json_ready(v.item())
    raise TypeError(f'not JSON serialisable: {type(v).__name__}')
