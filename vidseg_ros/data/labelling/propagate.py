"""Label propagation from sparse labelled frames to every frame of a sequence.

Three methods, each recording its label source:

* ``flow`` (source ``propagated``): dense optical flow (OpenCV DIS or Farneback) carries the
  one-hot labels of the nearest labelled frame before *and* after a frame along the chain of
  adjacent-frame flows. A forward-backward consistency check (Sundaram et al. 2010) zeroes the
  confidence of occluded or badly tracked pixels; the two directions are blended by confidence and
  proximity, and pixels neither direction vouches for become ``ignore_index``.
* ``tracker`` (binary object labels, source ``propagated``): the object's box is tracked with a
  median-flow tracker (or OpenCV's MIL) and the labelled mask is moved/scaled with the box.
* ``teacher`` (source ``teacher``): a trained model's prediction, kept where its confidence
  reaches a threshold. The model enters as a plain callable ``predict(rgb) -> (class_ids,
  confidence)`` so this module does not depend on the engine; a ``classes`` attribute on it (the
  model's class names) lets ``run.propagate_dataset`` refuse a model for other classes up front.

Frames are (H, W, 3) uint8 RGB; labels (H, W) uint8 class ids.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.config import setting
from vidseg_ros.data.datasets.layouts import DEFAULT_IGNORE
from vidseg_ros.data.labelling.flow import dis_min_side, flow_any_size
from vidseg_ros.data.labelling.spill import Spill, span_spill_bytes
from vidseg_ros.text import clip

log = logging.getLogger(__name__)
METHODS = ('flow', 'tracker', 'teacher')
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class PropagateConfig:
    """Settings of ``vidseg propagate``."""

    method: str = setting('flow', 'flow (optical flow), tracker (box tracker, binary labels) or '
                                  'teacher (model pseudo-labels)', METHODS)
    flow: str = setting('dis', 'Optical flow algorithm', ('dis', 'farneback'))
    dis_preset: str = setting('fine', 'DIS preset (speed/quality); fine = medium refined down to the '
                                      'full resolution (slowest, best on thin objects)',
                              ('ultrafast', 'fast', 'medium', 'fine'))
    flow_scale: float = setting(1.0, 'Compute flow at this fraction of the frame size (faster)')
    consistency: bool = setting(True, 'Forward-backward flow check; inconsistent pixels lose confidence')
    min_confidence: float = setting(0.5, 'Pixels whose propagated confidence is below this become ignore')
    max_distance: int = setting(30, 'Frames labelled before the first / after the last label of a sequence (flow), '
                                    'from the nearest label (tracker)')
    tracker: str = setting('medianflow', 'Box tracker for method=tracker', ('medianflow', 'mil'))
    teacher_threshold: float = setting(0.7, 'Teacher pseudo-labels: minimum confidence, else ignore')
    ignore_index: int = setting(DEFAULT_IGNORE, 'Label value for unknown pixels (a dataset\'s own, from its '
                                                'dataset.yaml, replaces it)')


# ---------------------------------------------------------------- optical flow ---------------
class FlowEstimator:
    """Dense flow between two RGB frames; ``flow(a, b)[y, x]`` = where pixel (x, y) of ``a`` is in ``b``."""

    def __init__(self, cfg: PropagateConfig):
        self.scale = cfg.flow_scale
        if cfg.flow == 'dis':
            preset = {'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                      'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
                      'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
                      'fine': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[cfg.dis_preset]
            dis = cv2.DISOpticalFlow_create(preset)
            if cfg.dis_preset == 'fine':
                dis.setFinestScale(0)   # medium stops one pyramid level short of full resolution
            # DIS refuses or kills the process on small frames (after flow_scale): those go through flow_any_size
            self._calc = lambda a, b: flow_any_size(lambda x, y: dis.calc(x, y, None), a, b, dis_min_side(dis))
        elif cfg.flow == 'farneback':
            self._calc = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 21, 3, 7, 1.5, 0)
        else:
            raise ValueError(f'unknown flow {cfg.flow!r}; use dis or farneback')

    def gray(self, rgb: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if self.scale != 1.0:
            g = cv2.resize(g, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        return g

    def __call__(self, ga: np.ndarray, gb: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        f = self._calc(ga, gb)
        if self.scale != 1.0:
            h, w = out_hw
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) / self.scale
        return f


def _same_size(frame: np.ndarray, hw: tuple[int, int], i: int) -> np.ndarray:
    """``frame`` (position ``i``), refused when its size is not the sequence's ``hw``."""
    if frame.shape[:2] != tuple(hw):
        raise ValueError(f'frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 {hw[1]}x{hw[0]}: '
                         'flow needs one frame size in a sequence; split it where the size changes')
    return frame


def _grid(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.dstack([gx, gy])


def warp(src: np.ndarray, flow: np.ndarray, grid: np.ndarray, interp=cv2.INTER_LINEAR) -> np.ndarray:
    """Sample ``src`` at ``grid + flow`` (backward warping); outside -> 0. Any channel count."""
    maps = grid + flow
    mx, my = maps[..., 0], maps[..., 1]
    if src.ndim == 2 or src.shape[2] <= 4:
        return cv2.remap(src, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    parts = [cv2.remap(np.ascontiguousarray(src[..., i:i + 4]), mx, my, interp,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0) for i in range(0, src.shape[2], 4)]
    return np.concatenate([p if p.ndim == 3 else p[..., None] for p in parts], axis=2)


def consistent(f_ab: np.ndarray, f_ba: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of ``a`` whose flow to ``b`` and back returns home (Sundaram et al.)."""
    back = warp(f_ba, f_ab, grid)
    err = np.sum((f_ab + back) ** 2, axis=2)
    mag = np.sum(f_ab ** 2, axis=2) + np.sum(back ** 2, axis=2)
    inside = ((grid + f_ab)[..., 0] >= 0) & ((grid + f_ab)[..., 0] <= grid.shape[1] - 1) & \
             ((grid + f_ab)[..., 1] >= 0) & ((grid + f_ab)[..., 1] <= grid.shape[0] - 1)
    return (err < 0.01 * mag + 0.5) & inside


def one_hot(label: np.ndarray, num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) ids -> ((H, W, C) float32 one-hot, (H, W) confidence: 0 on ignore pixels)."""
    valid = label != ignore_index
    if (label[valid] >= num_classes).any():
        raise ValueError(f'label value {int(label[valid].max())} is neither a class id (0..{num_classes - 1}) '
                         f'nor the ignore value {ignore_index}: check dataset.yaml classes / ignore_index')
    oh = np.zeros(label.shape + (num_classes,), np.float32)
    ids = np.where(valid, label, 0).astype(np.int64)
    np.put_along_axis(oh, ids[..., None], 1.0, axis=2)
    oh[~valid] = 0.0
    return oh, valid.astype(np.float32)


@dataclass
class Propagated:
    """One propagated frame: ``label`` with ignore, ``filled`` with every pixel assigned."""

    label: np.ndarray
    filled: np.ndarray
    confidence: np.ndarray
    source: str


class FlowCache:
    """Adjacent-frame flows of one sequence, computed once and reused (e.g. across label spacings); keeps every
    flow it computed in memory (16 bytes a pixel a frame)."""

    def __init__(self, frames: Sequence[np.ndarray], cfg: PropagateConfig):
        self.frames, self.fe = frames, FlowEstimator(cfg)
        self.hw = frames[0].shape[:2]
        self._gray: dict[int, np.ndarray] = {}
        self._flow: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, i: int, j: int) -> np.ndarray:
        if (i, j) not in self._flow:
            for k in (i, j):
                if k not in self._gray:
                    self._gray[k] = self.fe.gray(_same_size(self.frames[k], self.hw, k))
            self._flow[(i, j)] = self.fe(self._gray[i], self._gray[j], self.hw)
        return self._flow[(i, j)]


class _SpanFlows:
    """The adjacent-frame flows of one span, each computed once, only the current pair's in memory: with the
    consistency check both passes use both flows of a pair, so the backward pass (``keep``) puts its flows in
    ``spill`` and the forward pass takes them back (without it they use opposite flows: nothing is shared)."""

    def __init__(self, frames: Sequence[np.ndarray], cfg: PropagateConfig, hw: tuple[int, int], spill: Spill):
        self.frames, self.fe, self.hw = frames, FlowEstimator(cfg), hw
        self.spill = spill if cfg.consistency else None
        self.keep = False
        self._flows: dict[tuple[int, int], np.ndarray] = {}
        self._gray: dict[int, np.ndarray] = {}

    def __call__(self, i: int, j: int) -> np.ndarray:
        if (i, j) not in self._flows:
            if self._flows and {i, j} != set(next(iter(self._flows))):
                self.put_aside()
            if self.spill is not None and ('flow', i, j) in self.spill:
                self._flows[(i, j)] = self.spill.take(('flow', i, j), 1)[0]
            else:
                self._flows[(i, j)] = self.fe(self._gray_of(i), self._gray_of(j), self.hw)
        return self._flows[(i, j)]

    def _gray_of(self, k: int) -> np.ndarray:
        if k not in self._gray:
            if len(self._gray) > 2:
                self._gray.pop(next(iter(self._gray)))
            self._gray[k] = self.fe.gray(_same_size(self.frames[k], self.hw, k))
        return self._gray[k]

    def put_aside(self) -> None:
        """The current pair's flows into the spill (in the backward pass), and out of memory."""
        if self.keep and self.spill is not None:
            for (i, j), f in self._flows.items():
                self.spill.put(('flow', i, j), f)
        self._flows = {}


def propagate_flow(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray], num_classes: int,
                   cfg: PropagateConfig | None = None, cache: FlowCache | None = None
                   ) -> dict[int, Propagated]:
    """Flow propagation inside one sequence.

    Args:
        frames: consecutive RGB frames (a list, or anything indexable that loads lazily).
        labels: position -> label of the human-labelled frames.
        num_classes: classes in the labels (ignore excluded).
        cfg: flow settings; ``max_distance`` bounds one-sided propagation at the sequence ends.
        cache: reuse flows computed before (keeps every flow of the sequence in memory); without
            one, flows live only while their span is processed.

    Returns: position -> Propagated, for every unlabelled frame within reach of a label (in position order).
    """
    return dict(sorted(iter_propagate_flow(frames, labels, num_classes, cfg, cache), key=lambda item: item[0]))


def iter_propagate_flow(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray], num_classes: int,
                        cfg: PropagateConfig | None = None, cache: FlowCache | None = None,
                        spill_dir: str | Path | None = None) -> Iterator[tuple[int, Propagated]]:
    """``propagate_flow`` as (position, Propagated) pairs as they are made, not in position order, in memory
    that does not grow with the frames between two labels: a span between two labels keeps what its
    backward pass made for its forward pass in a :class:`Spill` (in ``spill_dir``, None = the system's
    temporary folder, past ``spill.SPILL_BUDGET``). Measured before, at 320x240 and 12 classes: 9.4 MB a frame
    of the span held at once (a 200-frame span: 2 GB)."""
    cfg = cfg or PropagateConfig()
    n = len(frames)
    keys = sorted(k for k in labels if 0 <= k < n)
    if not keys:
        return
    hw = frames[keys[0]].shape[:2]
    grid = _grid(hw)
    spans = [(None, keys[0])] + list(zip(keys, keys[1:])) + [(keys[-1], None)]
    for a, b in spans:
        lo = a if a is not None else max(0, b - cfg.max_distance)
        hi = b if b is not None else min(n - 1, a + cfg.max_distance)
        if hi - lo < 1 or (a is not None and b is not None and b - a < 2):
            continue
        need, what = _spill_need(frames, a, b, hw, cfg, cache) if a is not None and b is not None else (0, '')
        # entered before the span's first flow: a spill that would not fit on the disk is refused there
        with Spill(spill_dir, need_bytes=need, what=what) as spill:
            flow = cache if cache is not None else _SpanFlows(frames, cfg, hw, spill)
            yield from _span(flow, spill, labels, a, b, lo, hi, num_classes, cfg, grid, hw)


def _spill_need(frames, a: int, b: int, hw: tuple[int, int], cfg: PropagateConfig, cache) -> tuple[int, str]:
    """What a span between two labels keeps for its second pass (``spill.span_spill_bytes``; the flows too with the
    consistency check, unless a caller's cache keeps them) and its name in an error: 2 MB a frame at 320x240,
    58 MB at 1920x1080, so labels 30 s apart at 30 Hz spilled 50 GB for one span, and filled the disk. Its
    :class:`Spill` reserves it on the disk before the span's flows (with the other spans spilling there at the
    same time: each checked the free space alone)."""
    paths = getattr(frames, 'paths', None)
    names = (f'{clip(paths[a])} and {clip(paths[b])}' if paths is not None else f'positions {a} and {b}')
    return (span_spill_bytes(b - a - 1, hw, cfg.consistency and cache is None),
            f'flow propagation of the {b - a - 1} frames between the labelled frames {names}')


def _chain(flow, c: np.ndarray, positions: range, cfg: PropagateConfig, grid: np.ndarray,
           hw: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(position, displacement to the labelled frame, confidence) along ``positions``, frame by frame away
    from the labelled one (forward: frame i from frame i-1; backward: from i+1); ``c`` is the labelled frame's
    confidence (``one_hot``)."""
    step = positions.step
    g = np.zeros(hw + (2,), np.float32)
    for i in positions:
        f = flow(i, i - step)
        # Compose displacements and warp the labels once: repeated resampling blurs thin parts.
        g = f + warp(g, f, grid)
        c = warp(c, f, grid)
        if cfg.consistency:
            c = c * consistent(f, flow(i - step, i), grid)
        yield i, g, c


def _span(flow, spill: Spill, labels, a, b, lo, hi, num_classes, cfg, grid, hw) -> Iterator[tuple[int, Propagated]]:
    """The frames of one span: from label ``a`` forward, from label ``b`` backward, or (both) blended; the
    backward pass of a span between two labels puts its states in ``spill`` for the forward pass."""
    # each label's one-hot and confidence, once: both passes of the span start from them
    p_a, c_a = one_hot(labels[a], num_classes, cfg.ignore_index) if a is not None else (None, None)
    p_b, c_b = one_hot(labels[b], num_classes, cfg.ignore_index) if b is not None else (None, None)

    def carried(p0, g, c):
        return warp(p0, g, grid).reshape(p0.shape), c
    if a is None or b is None:
        p0, c0 = (p_b, c_b) if a is None else (p_a, c_a)
        positions = range(b - 1, lo - 1, -1) if a is None else range(a + 1, hi + 1)
        for i, g, c in _chain(flow, c0, positions, cfg, grid, hw):
            one = carried(p0, g, c)
            yield i, _blend(one if a is not None else None, one if a is None else None,
                            (i - a) if a is not None else None, (b - i) if b is not None else None, cfg)
        return
    own = isinstance(flow, _SpanFlows)      # not a caller's FlowCache, which keeps every flow itself
    if own:
        flow.keep = True
    for i, g, c in _chain(flow, c_b, range(b - 1, a, -1), cfg, grid, hw):
        spill.put(('state', i), g, c)
    if own:
        flow.put_aside()
        flow.keep = False
    for i, g, c in _chain(flow, c_a, range(a + 1, b), cfg, grid, hw):
        yield i, _blend(carried(p_a, g, c), carried(p_b, *spill.take(('state', i), 2)), i - a, b - i, cfg)


def _blend(f, b, da, db, cfg: PropagateConfig) -> Propagated:
    """Mix both directions by confidence and closeness to their labelled frame."""
    parts = [(x, 1.0 / d) for x, d in ((f, da), (b, db)) if x is not None]
    num = sum(p * (c * w)[..., None] for (p, c), w in parts)
    den = sum(c * w for (p, c), w in parts)
    raw = sum(p * w for (p, c), w in parts)       # ignores confidence: for the filled label
    prob = np.where(den[..., None] > 1e-6, num / np.maximum(den, 1e-6)[..., None], raw)
    conf = np.maximum.reduce([c for (p, c), _ in parts]) if len(parts) > 1 else parts[0][0][1]
    conf = conf * prob.max(axis=2)
    filled = prob.argmax(axis=2).astype(np.uint8)
    label = np.where(conf >= cfg.min_confidence, filled, cfg.ignore_index).astype(np.uint8)
    return Propagated(label, filled, conf.astype(np.float32), 'propagated')


# ---------------------------------------------------------------- teacher and tracker ---------
def teacher_label(rgb: np.ndarray, predict: Predict, threshold: float,
                  ignore_index: int = DEFAULT_IGNORE, num_classes: int | None = None) -> Propagated:
    """A model's prediction as a pseudo-label; pixels below ``threshold`` confidence -> ignore.

    A predicted id that is not one of the ``num_classes`` (nor ignore) is refused: the model is for
    other classes, and its ids would mean something else in this dataset.
    """
    ids, conf = predict(rgb)
    ids = np.asarray(ids, np.uint8)
    conf = np.asarray(conf, np.float32)
    if ids.shape != rgb.shape[:2]:
        raise ValueError(f'predict returned {ids.shape} for a {rgb.shape[:2]} frame; '
                         'it must return labels at the input size')
    if num_classes is not None:
        bad = ids[(ids >= num_classes) & (ids != ignore_index)]
        if bad.size:
            raise ValueError(f'the teacher predicted class id {int(bad.max())} but the dataset has {num_classes} '
                             f'classes (0..{num_classes - 1}): it is a model for other classes; use one '
                             "trained on the dataset's classes")
    label = np.where(conf >= threshold, ids, ignore_index).astype(np.uint8)
    return Propagated(label, ids, conf, 'teacher')


def _teacher_at(frames: Sequence[np.ndarray], i: int, predict: Predict, cfg: PropagateConfig,
                num_classes: int) -> Propagated:
    """``teacher_label`` of frame ``i``; a frame the model gives NaN or inf on stops the run with an error naming
    its file (``frames.paths``, as ``LazyFrames`` has; else its index): the engine's NonFiniteOutput knows none."""
    from vidseg_ros.engine.base import NonFiniteOutput
    try:
        return teacher_label(frames[i], predict, cfg.teacher_threshold, cfg.ignore_index, num_classes)
    except NonFiniteOutput as e:
        paths = getattr(frames, 'paths', None)
        raise NonFiniteOutput(f'frame {clip(paths[i]) if paths is not None else f"#{i}"}: {e}') from e


def propagate_tracker(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray],
                      cfg: PropagateConfig | None = None, fg_class: int = 1) -> dict[int, Propagated]:
    """Binary labels by box tracking (see :mod:`vidseg_ros.data.labelling.tracking`)."""
    return dict(iter_propagate_tracker(frames, labels, cfg, fg_class))


def iter_propagate_tracker(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray],
                           cfg: PropagateConfig | None = None, fg_class: int = 1) -> Iterator[tuple[int, Propagated]]:
    """``propagate_tracker`` frame by frame, as the trackers reach them. A frame past the one where its track was
    lost has confidence 0: ignore in ``label`` (below ``min_confidence``), the last box's mask in ``filled``. Its
    label was that mask, confident: an object that left the frame stayed labelled where it was last seen."""
    from vidseg_ros.data.labelling.tracking import iter_tracks
    cfg = cfg or PropagateConfig()
    for i, m, held in iter_tracks(frames, labels, cfg.tracker, fg_class, cfg.max_distance):
        filled = (m * fg_class).astype(np.uint8)
        conf = np.full(m.shape, 1.0 if held else 0.0, np.float32)
        label = np.where(conf >= cfg.min_confidence, filled, cfg.ignore_index).astype(np.uint8)    # as flow's
        yield i, Propagated(label, filled, conf, 'propagated')


def propagate_sequence(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray], num_classes: int,
                       cfg: PropagateConfig | None = None, predict: Predict | None = None,
                       cache: FlowCache | None = None, stream: bool = False,
                       spill_dir: str | Path | None = None) -> dict[int, Propagated] | Iterator[tuple[int, Propagated]]:
    """Dispatch on ``cfg.method``; returns labels for the frames that had none.

    ``stream``: (position, Propagated) pairs as they are made instead of a dict of all of them, in memory that
    does not grow with the sequence (a teacher over a 5000-frame sequence held 2.4 GB of labels at 320x240);
    ``spill_dir`` is where flow's spans put aside their second pass's states (:func:`iter_propagate_flow`).
    """
    cfg = cfg or PropagateConfig()
    if cfg.method == 'flow':
        items = iter_propagate_flow(frames, labels, num_classes, cfg, cache, spill_dir)
        return items if stream else dict(sorted(items, key=lambda item: item[0]))
    if cfg.method == 'tracker':
        if num_classes > 2:
            raise ValueError('method=tracker is for binary (object / background) labels; '
                             f'this dataset has {num_classes} classes: use method=flow')
        items = iter_propagate_tracker(frames, labels, cfg)
    elif cfg.method == 'teacher':
        if predict is None:
            raise ValueError('method=teacher needs a model: pass --model CHECKPOINT')
        items = ((i, _teacher_at(frames, i, predict, cfg, num_classes)) for i in range(len(frames)) if i not in labels)
    else:
        raise ValueError(f'unknown method {cfg.method!r}; valid: {", ".join(METHODS)}')
    return items if stream else dict(items)
