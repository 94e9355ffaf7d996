"""Box trackers that carry a binary object mask from labelled frames to the frames around them.

The all-frames study labelled every frame cheaply by tracking boxes; here the labelled mask
itself is moved and scaled with the tracked box, which keeps the object's shape instead of filling
the box. ``medianflow`` is the classic TLD median-flow tracker (Kalal et al. 2010) on pyramidal
Lucas-Kanade with a forward-backward error filter, implemented here because the contrib trackers
(CSRT, KCF, MedianFlow) are not in opencv-python-headless; ``mil`` is OpenCV's built-in MIL
tracker (translation only).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)
_LK = {'winSize': (15, 15), 'maxLevel': 3,
       'criteria': (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x, y, w, h) of the nonzero pixels, None when empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


class MedianFlow:
    """Median-flow tracker: LK on a point grid in the box, keep the best half by FB error.

    With a mask, only grid points on the object are tracked, so background inside the box (water
    around a swan, road around a car) does not drag the box along.
    """

    def __init__(self, grid: int = 12):
        self.grid = grid
        self.prev = None
        self.box = None
        self.mask0, self.box0 = None, None

    def init(self, rgb: np.ndarray, box, mask: np.ndarray | None = None) -> None:
        self.prev = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        self.box = self.box0 = tuple(map(float, box))
        self.mask0 = mask

    def _points(self) -> np.ndarray:
        x, y, w, h = self.box
        gx, gy = np.meshgrid(np.linspace(x, x + w - 1, self.grid), np.linspace(y, y + h - 1, self.grid))
        pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
        if self.mask0 is not None:
            m = move_mask(self.mask0, self.box0, self.box)
            xi = np.clip(pts[:, 0].round().astype(int), 0, m.shape[1] - 1)
            yi = np.clip(pts[:, 1].round().astype(int), 0, m.shape[0] - 1)
            on = m[yi, xi] > 0
            if on.sum() >= 10:
                pts = pts[on]
        return pts[:, None]

    def update(self, rgb: np.ndarray) -> tuple[bool, tuple]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        x, y, w, h = self.box
        p0 = self._points()
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(self.prev, gray, p0, None, **_LK)
        pb, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self.prev, p1, None, **_LK)
        fb = np.linalg.norm((p0 - pb)[:, 0], axis=1)
        ok = (st1[:, 0] == 1) & (st2[:, 0] == 1)
        self.prev = gray
        if ok.sum() < 4:
            return False, self.box
        good = ok & (fb <= np.median(fb[ok]))
        a, b = p0[good, 0], p1[good, 0]
        d = np.median(b - a, axis=0)
        # Scale: median ratio of pairwise point distances after vs before.
        i, j = np.triu_indices(len(a), 1)
        da, db = np.linalg.norm(a[i] - a[j], axis=1), np.linalg.norm(b[i] - b[j], axis=1)
        s = float(np.median(db[da > 1] / da[da > 1])) if (da > 1).any() else 1.0
        cx, cy = x + w / 2 + d[0], y + h / 2 + d[1]
        w, h = w * s, h * s
        self.box = (cx - w / 2, cy - h / 2, w, h)
        return True, self.box


class _MIL:
    def __init__(self):
        self.t = cv2.TrackerMIL_create()
        self.box = None

    def init(self, rgb, box, mask=None):
        self.box = tuple(map(float, box))
        self.t.init(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), tuple(int(round(v)) for v in box))

    def update(self, rgb):
        ok, box = self.t.update(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if ok:
            self.box = tuple(map(float, box))
        return ok, self.box


def make_tracker(name: str):
    if name == 'medianflow':
        return MedianFlow()
    if name == 'mil':
        return _MIL()
    raise ValueError(f'unknown tracker {name!r}; use medianflow or mil')


def move_mask(mask: np.ndarray, box_from, box_to) -> np.ndarray:
    """Scale and shift ``mask`` so that ``box_from`` lands on ``box_to`` (nearest sampling)."""
    x0, y0, w0, h0 = box_from
    x1, y1, w1, h1 = box_to
    sx, sy = w1 / max(w0, 1e-6), h1 / max(h0, 1e-6)
    m = np.array([[sx, 0, x1 - sx * x0], [0, sy, y1 - sy * y0]], np.float32)
    return cv2.warpAffine(mask, m, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def track_masks(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray], tracker: str = 'medianflow',
                fg_class: int = 1, max_distance: int = 30) -> dict[int, np.ndarray]:
    """Binary masks (0/1) for unlabelled frames, each from its nearest labelled frame.

    Frames between two labels take the nearer one (ties go to the earlier label); the box is
    tracked frame by frame from that label towards the frame in question.
    """
    return dict(iter_track_masks(frames, labels, tracker, fg_class, max_distance))


def iter_track_masks(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray], tracker: str = 'medianflow',
                     fg_class: int = 1, max_distance: int = 30) -> Iterator[tuple[int, np.ndarray]]:
    """``track_masks`` as (position, mask) pairs as the trackers reach them (none held)."""
    for i, mask, _ in iter_tracks(frames, labels, tracker, fg_class, max_distance):
        yield i, mask


def iter_tracks(frames: Sequence[np.ndarray], labels: dict[int, np.ndarray], tracker: str = 'medianflow',
                fg_class: int = 1, max_distance: int = 30) -> Iterator[tuple[int, np.ndarray, bool]]:
    """``iter_track_masks`` with, for each mask, whether the track held up to its frame: False from the frame where
    the tracker lost the object on (it left the frame, was hidden), in that direction from its label; the mask
    there is the last box's, which a tracker that found texture again there keeps following."""
    n = len(frames)
    keys = sorted(k for k in labels if 0 <= k < n)
    nearest: dict[int, int] = {}
    for i in range(n):
        if i in labels or not keys:
            continue
        k = min(keys, key=lambda k: (abs(k - i), k > i))
        if abs(k - i) <= max_distance:
            nearest[i] = k
    for k in keys:
        mask = (labels[k] == fg_class).astype(np.uint8)
        box = mask_box(mask)
        for step in (1, -1):
            targets = sorted((i for i, kk in nearest.items() if kk == k and (i - k) * step > 0),
                             key=lambda i: abs(i - k))
            if not targets:
                continue
            if box is None:
                for i in targets:
                    yield i, np.zeros_like(mask), True
                continue
            wanted = set(targets)
            t = make_tracker(tracker)
            t.init(frames[k], box, mask)
            cur, held = box, True
            for i in range(k + step, targets[-1] + step, step):
                if frames[i].shape[:2] != mask.shape:
                    raise ValueError(f'frame {i} is {frames[i].shape[1]}x{frames[i].shape[0]}, labelled frame {k} '
                                     f'{mask.shape[1]}x{mask.shape[0]}: tracking needs one frame size in a sequence; '
                                     'split it where the size changes')
                ok, cur = t.update(frames[i])
                held = held and ok      # lost once, lost: a box that then follows background says nothing
                if i in wanted:
                    yield i, move_mask(mask, box, cur), held
