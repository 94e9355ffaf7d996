"""PyTorch datasets for the three training regimes: single frames, key/current triplets, sequences.

Every sample is a dict of tensors: images are float32 (3, H, W) in 0..1 (normalisation is the
model's job, see ``constants.IMAGENET_MEAN``), labels int64 (H, W) where unknown pixels hold the
source's ``ignore_index`` (CamVid void = 11, DAVIS/extracted = 255). Augmentation parameters are
drawn once per sample and shared by all its frames.

Temporal neighbours come from the records themselves: the frame ``d`` source-video frames before a
labelled frame is used when it exists (DAVIS, extracted bags, CamVid val's 15 Hz run). Where the raw
video between labelled frames is missing (CamVid train, 1 Hz), ``motion='auto'`` falls back to
synthetic motion: the key frame is the labelled frame under a random affine that grows with ``d``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from vidseg_ros.training import augment
from vidseg_ros.training.augment import AugmentConfig
from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.video import check_frame_sizes
from vidseg_ros.data.datasets.layouts import FrameRecord, FrameSource

log = logging.getLogger(__name__)
MOTIONS = ('auto', 'real', 'synthetic')


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in 0..1."""
    # numpy, not torch ops: torch's intra-op threads make small conversions slow in loader
    # processes on busy CPUs (measured 10x slower than this on a loaded 2-core machine).
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    chw *= np.float32(1.0 / 255.0)
    return torch.from_numpy(chw)


def label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.from_numpy(np.stack([t.numpy() for t in tensors]))


class _Base(Dataset):
    """Shared reading and augmentation; subclasses choose which frames make a sample (``items``)."""

    items: list[FrameRecord]

    def __len__(self) -> int:
        return len(self.items)

    def __init__(self, source: FrameSource, augment_cfg: AugmentConfig | None = None,
                 train: bool = True, seed: int | None = None):
        self.source = source
        self.cfg = augment_cfg or AugmentConfig()
        self.train = train
        self.seed = seed
        self.ignore_index = source.ignore_index
        self.num_classes = source.num_classes
        self.class_names = list(source.class_names)
        self._by_seq = source.sequences()
        self._pos = {(r.sequence, r.index): r for r in source.records}

    def _rng(self, i: int) -> np.random.Generator:
        # Fixed seed -> the same sample for the same index (reproducible eval); else fresh randomness.
        if self.seed is not None:
            return np.random.default_rng((self.seed, i))
        return np.random.default_rng()

    def _params(self, in_hw, rng) -> augment.Params:
        return augment.draw(self.cfg, in_hw, rng, self.train)

    def _image(self, rec: FrameRecord, p: augment.Params) -> torch.Tensor:
        return to_tensor(augment.apply_image(read_rgb(rec.image), p))

    def _label(self, rec: FrameRecord | None, p: augment.Params, rgb_hw) -> torch.Tensor:
        lab = self.source.read_label(rec) if rec is not None else None
        if lab is None:
            lab = np.full(rgb_hw, self.ignore_index, np.uint8)
        elif lab.shape[:2] != tuple(rgb_hw):   # the warp for the frame would cut or pad it: labels off by a scale
            raise ValueError(f'{rec.label}: the label is {lab.shape[1]}x{lab.shape[0]}, its frame {rec.image} is '
                             f'{rgb_hw[1]}x{rgb_hw[0]}; labels must be their frame\'s size (vidseg label-import '
                             'checks it)')
        return label_tensor(augment.apply_label(lab, p, self.ignore_index))

    def _earlier(self, rec: FrameRecord, max_distance: int) -> list[FrameRecord]:
        """Frames of the same sequence 1..max_distance source frames before ``rec``."""
        return [self._pos[(rec.sequence, rec.index - d)] for d in range(1, max_distance + 1)
                if (rec.sequence, rec.index - d) in self._pos]


class FrameDataset(_Base):
    """Labelled single frames (shuffle with the DataLoader): ``{'image', 'label'}``.

    Args:
        source: records and label mapping (``camvid_source``, ``davis_source``, ``extracted_source``).
        augment_cfg: augmentation and output size; None = whole frames unchanged.
        train: random augmentation when True; deterministic centre crop when False.
        seed: makes sample ``i`` reproducible.
        labelled_only: skip frames without a label file.
    """

    def __init__(self, source: FrameSource, augment_cfg: AugmentConfig | None = None,
                 train: bool = True, seed: int | None = None, labelled_only: bool = True):
        super().__init__(source, augment_cfg, train, seed)
        self.items = source.labelled() if labelled_only else list(source.records)
        check_frame_sizes(self.items)

    def __getitem__(self, i: int) -> dict:
        rec = self.items[i]
        rgb = read_rgb(rec.image)
        p = self._params(rgb.shape[:2], self._rng(i))
        return {'image': to_tensor(augment.apply_image(rgb, p)),
                'label': self._label(rec, p, rgb.shape[:2]), 'index': i}


class TripletDataset(_Base):
    """Key/current pairs for key-frame training: ``{'key', 'current', 'label', 'key_label', 'distance'}``.

    ``current`` is a labelled frame and ``key`` the frame ``distance`` (1..max_distance) frames
    earlier. ``key_label`` holds the key frame's human label when one exists, else all ignore (the
    trainer fills it with teacher predictions). ``distance`` is in source-video frames.

    Args:
        motion: ``real`` uses only real earlier frames (skips labelled frames without any),
            ``synthetic`` always warps the current frame, ``auto`` uses real frames where they exist.
        max_distance: largest key distance d (the key-frame FPN paper uses 1..15).
        shift_px_per_frame: synthetic motion: translation per frame of distance (source pixels).
    """

    def __init__(self, source: FrameSource, augment_cfg: AugmentConfig | None = None,
                 train: bool = True, seed: int | None = None, max_distance: int = 15,
                 motion: str = 'auto', shift_px_per_frame: float = 2.0):
        super().__init__(source, augment_cfg, train, seed)
        if motion not in MOTIONS:
            raise ValueError(f'motion must be one of {MOTIONS}, got {motion!r}')
        self.max_distance, self.motion, self.shift = max_distance, motion, shift_px_per_frame
        self.items = [r for r in source.labelled()
                      if motion != 'real' or self._earlier(r, max_distance)]
        if motion == 'real' and not self.items:
            raise ValueError(f'{source.name}: no labelled frame has an earlier frame within '
                             f'{max_distance} frames; use motion="synthetic" or "auto"')
        keys = [k for r in self.items for k in self._earlier(r, max_distance)] if motion != 'synthetic' else []
        check_frame_sizes(self.items + keys)

    def __getitem__(self, i: int) -> dict:
        rng = self._rng(i)
        cur = self.items[i]
        rgb = read_rgb(cur.image)
        p = self._params(rgb.shape[:2], rng)
        earlier = self._earlier(cur, self.max_distance) if self.motion != 'synthetic' else []
        if earlier:
            key = earlier[rng.integers(len(earlier))]
            distance = cur.index - key.index
            key_img = self._image(key, p)
            key_label = self._label(key, p, rgb.shape[:2])
        else:
            distance = int(rng.integers(1, self.max_distance + 1))
            warp = augment.synthetic_motion(rgb.shape[:2], distance, rng, self.shift)
            pk = augment.compose(warp, p)
            key_img = to_tensor(augment.apply_image(rgb, pk))
            key_label = self._label(cur, pk, rgb.shape[:2])
        return {'key': key_img, 'current': to_tensor(augment.apply_image(rgb, p)),
                'label': self._label(cur, p, rgb.shape[:2]), 'key_label': key_label,
                'distance': int(distance), 'synthetic': not earlier}


class SequenceDataset(_Base):
    """Clips of ``length`` frames around a labelled frame: ``{'frames', 'labels', 'label_pos'}``.

    ``frames`` is (L, 3, H, W); ``labels`` (L, H, W) holds the labelled frame's label at
    ``label_pos`` (random in training, last frame otherwise) and ignore elsewhere, unless
    ``all_labels`` keeps every known label (DAVIS is dense). Frames are consecutive source frames;
    missing ones are synthesised from the labelled frame by cumulative random motion when
    ``motion`` allows (``real`` drops labelled frames without a full real window).

    Args:
        length: frames per clip (recurrent UNet: 5 for training, 12 for evaluation).
        stride: source frames between clip frames.
    """

    def __init__(self, source: FrameSource, length: int = 5, augment_cfg: AugmentConfig | None = None,
                 train: bool = True, seed: int | None = None, motion: str = 'auto', stride: int = 1,
                 all_labels: bool = False, shift_px_per_frame: float = 2.0):
        super().__init__(source, augment_cfg, train, seed)
        if motion not in MOTIONS:
            raise ValueError(f'motion must be one of {MOTIONS}, got {motion!r}')
        self.length, self.motion, self.stride = length, motion, stride
        self.all_labels, self.shift = all_labels, shift_px_per_frame
        self.items = [r for r in source.labelled() if motion != 'real' or self._windows(r)]
        if not self.items:
            raise ValueError(f'{source.name}: no labelled frame has a full window of {length} real '
                             'frames; use motion="auto" or "synthetic"')
        reach = range(-(length - 1), length) if motion != 'synthetic' else [0]     # what a clip may hold
        check_frame_sizes([self._pos[(r.sequence, r.index + k * stride)] for r in self.items for k in reach
                           if (r.sequence, r.index + k * stride) in self._pos])

    def _windows(self, rec: FrameRecord) -> list[int]:
        """Positions t at which ``rec`` can sit with all other frames real."""
        ok = []
        for t in range(self.length):
            idx = [rec.index + (k - t) * self.stride for k in range(self.length)]
            if all((rec.sequence, j) in self._pos for j in idx):
                ok.append(t)
        return ok

    def __getitem__(self, i: int) -> dict:
        rng = self._rng(i)
        rec = self.items[i]
        rgb = read_rgb(rec.image)
        p = self._params(rgb.shape[:2], rng)
        real = self._windows(rec) if self.motion != 'synthetic' else []
        if real:
            t = int(real[rng.integers(len(real))]) if self.train else real[-1]
        else:
            t = int(rng.integers(self.length)) if self.train else self.length - 1
        frames, labels = [], []
        ignore = label_tensor(np.full(p.out_hw, self.ignore_index, np.int64))
        cum = {t: np.array([[1.0, 0, 0], [0, 1.0, 0]])}
        for k in range(self.length):
            other = self._pos.get((rec.sequence, rec.index + (k - t) * self.stride)) if real else None
            if k == t or other is not None:
                src = rec if k == t else other
                frames.append(self._image(src, p) if k != t else to_tensor(augment.apply_image(rgb, p)))
                keep = k == t or (self.all_labels and src.label is not None)
                labels.append(self._label(src, p, rgb.shape[:2]) if keep else ignore)
            else:
                warp = self._synthetic(cum, k, t, rgb.shape[:2], rng)
                pk = augment.compose(warp, p)
                frames.append(to_tensor(augment.apply_image(rgb, pk)))
                labels.append(self._label(rec, pk, rgb.shape[:2]) if self.all_labels else ignore)
        return {'frames': _stack(frames), 'labels': _stack(labels), 'label_pos': t,
                'synthetic': not real}

    def _synthetic(self, cum: dict, k: int, t: int, hw, rng) -> np.ndarray:
        # Motion accumulates away from the labelled frame so the clip moves smoothly.
        step = 1 if k > t else -1
        for j in range(t + step, k + step, step):
            if j not in cum:
                m = augment.synthetic_motion(hw, self.stride, rng, self.shift)
                cum[j] = (np.vstack([m, [0, 0, 1]]) @ np.vstack([cum[j - step], [0, 0, 1]]))[:2]
        return cum[k]


class RealClipDataset(_Base):
    """Clips of ``length`` consecutive real frames with no labels: ``{'frames'}`` (L, 3, H, W).

    For the temporal-consistency loss (``training.temporal``): every frame that starts a full window
    of its sequence is an item, labelled or not, so an extracted bag without labels serves. One
    augmentation draw per clip (the same crop, flip and colour for every frame), so what changes
    between frames is the video's own motion and light.
    """

    def __init__(self, source: FrameSource, length: int = 5, augment_cfg: AugmentConfig | None = None,
                 train: bool = True, seed: int | None = None):
        super().__init__(source, augment_cfg, train, seed)
        self.length = length
        self.items = [r for r in source.records
                      if all((r.sequence, r.index + k) in self._pos for k in range(length))]
        if not self.items:
            raise ValueError(f'{source.name or "temporal data"}: no sequence has {length} consecutive frames '
                             '(seq_len)')
        check_frame_sizes([self._pos[(r.sequence, r.index + k)] for r in self.items for k in range(length)],
                          labels=False)     # its labels are never read

    def __getitem__(self, i: int) -> dict:
        rec = self.items[i]
        first = read_rgb(rec.image)
        p = self._params(first.shape[:2], self._rng(i))
        rest = [self._image(self._pos[(rec.sequence, rec.index + k)], p) for k in range(1, self.length)]
        return {'frames': _stack([to_tensor(augment.apply_image(first, p))] + rest)}


__all__ = ['MOTIONS', 'FrameDataset', 'RealClipDataset', 'SequenceDataset', 'TripletDataset', 'label_tensor',
           'to_tensor']
