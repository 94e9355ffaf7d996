"""From a TrainConfig to datasets: sources, splits, frames-per-video subsets, augmentation."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vidseg_ros.config import ConfigError
from vidseg_ros.training import augment
from vidseg_ros.training.augment import AugmentConfig
from vidseg_ros.training.datasets import FrameDataset, SequenceDataset, TripletDataset, to_tensor
from vidseg_ros.data.images import read_rgb
from vidseg_ros.constants import (CAMVID_CLASSES, CAMVID_LICENCE, CAMVID_PALETTE, CAMVID_VOID, DAVIS_CLASSES,
                                  DAVIS_LICENCE, DAVIS_PALETTE)
from vidseg_ros.data.datasets.layouts import (DEFAULT_IGNORE, FrameSource, camvid_source, davis_source, extracted_source,
                                     read_meta)

from .config import TrainConfig
from .selection import without_selection

LOG = logging.getLogger(__name__)

# DAVIS has no train split here: each sequence is cut in time, the head trains and the tail
# validates (a gap keeps near-duplicate neighbouring frames out of validation).
DAVIS_HEAD = 0.7
DAVIS_GAP = 5


def dataset_info(cfg: TrainConfig) -> dict:
    """What the training data says about itself: class ``names``, ``colors``, ``ignore_index`` and
    ``licence`` (None where it says nothing). A folder dataset says it in its dataset.yaml, written by
    ``vidseg label-import --class-names/--classes`` (and ``licence:`` added by its owner)."""
    if cfg.dataset == 'camvid':
        return {'names': list(CAMVID_CLASSES), 'colors': CAMVID_PALETTE, 'ignore_index': CAMVID_VOID,
                'licence': CAMVID_LICENCE}
    if cfg.dataset == 'davis':
        return {'names': list(DAVIS_CLASSES), 'colors': DAVIS_PALETTE, 'ignore_index': DEFAULT_IGNORE,
                'licence': DAVIS_LICENCE}
    try:
        meta = read_meta(cfg.data_root)
    except (ValueError, OSError) as e:
        raise ConfigError(f'data_root: {e}') from e
    ignore, names, colors = meta.get('ignore_index'), meta.get('classes') or [], meta.get('colors')
    where = f'{cfg.data_root}/dataset.yaml'
    if not isinstance(names, list):
        raise ConfigError(f'{where}: classes must be a list of names, e.g. [background, object]')
    if colors is not None and not (isinstance(colors, list) and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) for v in c) for c in colors)):
        raise ConfigError(f'{where}: colors must be a list of [r, g, b] integer triples')
    return {'names': [str(n) for n in names] or None, 'colors': colors,
            'ignore_index': None if ignore is None else int(ignore),
            'licence': str(meta['licence']) if meta.get('licence') else None}


def resolve_classes(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``num_classes: 0`` and ``ignore_index: -1`` taken from the data, checked against it."""
    from dataclasses import replace
    info = dataset_info(cfg)
    names, num, ignore = info['names'], cfg.num_classes, cfg.ignore_index
    where = f'{cfg.data_root}/dataset.yaml' if cfg.dataset == 'folder' else f'the {cfg.dataset} dataset'
    if names and num and num != len(names):
        raise ConfigError(f'num_classes: {num}, but {where} names {len(names)} classes '
                          f'({", ".join(names)[:200]}); set num_classes: {len(names)} (or 0 = from the data)')
    if not num:
        if cfg.dataset == 'folder' and not Path(cfg.data_root).is_dir():
            raise ConfigError(f'data_root: {cfg.data_root} is not a folder (a `vidseg extract` dataset)')
        if not names:
            raise ConfigError(f'num_classes: 0 takes the class count from the data, but {where} names no '
                              'classes; set num_classes, or import labels with `vidseg label-import '
                              '--class-names a,b`')
        num = len(names)
    data_ignore = info['ignore_index']
    if ignore < 0:
        ignore = DEFAULT_IGNORE if data_ignore is None else data_ignore
    elif data_ignore is not None and ignore != data_ignore:
        raise ConfigError(f'ignore_index: {ignore}, but {where} marks unlabelled pixels with {data_ignore}; '
                          f'set ignore_index: {data_ignore} (or -1 = from the data)')
    return replace(cfg, num_classes=num, ignore_index=ignore)


def open_split(cfg: TrainConfig, split: str) -> FrameSource:
    """Records of one split. CamVid: a folder name, optionally ``:SEQ1,SEQ2``; DAVIS and folder (an extracted dataset):
    ``head``/``tail``/``all`` or a comma-separated list of sequences (optionally ``seqs:head``)."""
    root = Path(cfg.data_root)
    if cfg.dataset == 'camvid':     # folder, or folder:SEQ1,SEQ2 (whole drives, e.g. train:0006R0)
        folder, _, seqs = split.partition(':')
        src = camvid_source(root, folder)
        names = set(filter(None, seqs.split(',')))
        if names - set(src.sequences()):
            raise ConfigError(f'{root}/{folder}: no sequence {", ".join(sorted(names - set(src.sequences())))[:200]}; '
                              f'it has {", ".join(sorted(src.sequences()))[:200]}')
        return src.subset([r for r in src.records if r.sequence in names]) if names else src
    seqs, _, part = split.partition(':')
    if cfg.dataset == 'folder' and seqs in ('train', 'val'):   # the defaults; a folder has no split folders
        seqs = 'all'
    if seqs in ('head', 'tail', 'all'):
        seqs, part = '', seqs
    names = [s for s in seqs.split(',') if s] or None
    if cfg.dataset == 'folder':
        src = extracted_source(root)
        missing = sorted(set(names or []) - {r.sequence for r in src.records})
        if missing:
            raise ConfigError(f'{root}: no sequence {", ".join(missing)[:200]}; it has '
                              f'{", ".join(sorted(src.sequences()))[:200]}')
        src = src.subset([r for r in src.records if names is None or r.sequence in names])
    else:
        src = davis_source(root, names)
    return src.subset(davis_part(src, part or 'all'))


def davis_part(src: FrameSource, part: str) -> list:
    """Temporal head (first 70%) or tail (after a 5-frame gap) of every sequence, or all (DAVIS, folder)."""
    if part == 'all':
        return list(src.records)
    out = []
    for recs in src.sequences().values():
        cut = int(len(recs) * DAVIS_HEAD)
        out += recs[:cut] if part == 'head' else recs[cut + DAVIS_GAP:]
    if part not in ('head', 'tail'):
        raise ValueError(f'unknown DAVIS split part {part!r}; use head, tail or all')
    return out


def frames_per_video(src: FrameSource, n: int) -> FrameSource:
    """Keep labels on at most ``n`` evenly spaced labelled frames per sequence (0 = all).

    Unlabelled frames stay in the source so temporal neighbours still exist.
    """
    if n <= 0:
        return src
    keep = set()
    for recs in src.sequences().values():
        lab = [r for r in recs if r.label is not None]
        if not lab:
            continue
        idx = np.unique(np.linspace(0, len(lab) - 1, min(n, len(lab))).round().astype(int))
        keep.update((lab[i].sequence, lab[i].index) for i in idx)
    from dataclasses import replace
    return src.subset([r if (r.sequence, r.index) in keep else replace(r, label=None)
                       for r in src.records])


def augment_config(cfg: TrainConfig, src: FrameSource, train: bool) -> AugmentConfig:
    """Resize so the frame covers ``input_hw``, then crop (random in training, centre otherwise)."""
    first = next(r for r in src.records)
    h0, w0 = read_rgb(first.image).shape[:2]
    scale = max(cfg.input_hw[0] / h0, cfg.input_hw[1] / w0)
    crop = list(cfg.crop_hw or cfg.input_hw) if train else list(cfg.input_hw)
    return AugmentConfig(resize_scale=scale, crop_hw=crop,
                         scale_range=list(cfg.scale_range) if train else [1.0, 1.0],
                         hflip=cfg.hflip and train, jitter=cfg.jitter if train else 0.0,
                         hue_jitter=cfg.hue_jitter if train else 0.0, blur_prob=cfg.blur_prob if train else 0.0,
                         noise_std=cfg.noise_std if train else 0.0)


class NoisyCopies(Dataset):
    """``copies`` Gaussian-noise copies of every sample of a frame dataset (the all-frames paper's
    control: as many training images as all frames, but without new content)."""

    def __init__(self, base: Dataset, copies: int, sigma: float = 0.03, seed: int = 0):
        self.base, self.copies, self.sigma, self.seed = base, copies, sigma, seed

    def __len__(self) -> int:
        return len(self.base) * (1 + self.copies)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i % len(self.base)])
        if i >= len(self.base):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            noise = torch.randn(item['image'].shape, generator=g) * self.sigma
            item['image'] = (item['image'] + noise).clamp_(0, 1)
        return item


class FixedDistanceTriplets(TripletDataset):
    """Triplets with the key exactly ``max_distance`` frames before the current frame (the
    ``key_distance_mode: constant`` setting): the real frame when it exists, else synthetic motion."""

    def __getitem__(self, i: int) -> dict:
        rng = self._rng(i)
        cur = self.items[i]
        rgb = read_rgb(cur.image)
        p = self._params(rgb.shape[:2], rng)
        d = self.max_distance
        key = self._pos.get((cur.sequence, cur.index - d)) if self.motion != 'synthetic' else None
        if key is not None:
            key_img, key_label = self._image(key, p), self._label(key, p, rgb.shape[:2])
        else:
            pk = augment.compose(augment.synthetic_motion(rgb.shape[:2], d, rng, self.shift), p)
            key_img = to_tensor(augment.apply_image(rgb, pk))
            key_label = self._label(cur, pk, rgb.shape[:2])
        return {'key': key_img, 'current': to_tensor(augment.apply_image(rgb, p)),
                'label': self._label(cur, p, rgb.shape[:2]), 'key_label': key_label,
                'distance': d, 'synthetic': key is None}


def train_dataset(cfg: TrainConfig) -> Dataset:
    """The training set for ``cfg.mode`` (frames, triplets or clips)."""
    src = frames_per_video(without_selection(cfg, open_split(cfg, cfg.train_split)), cfg.frames_per_video)
    aug = augment_config(cfg, src, train=True)
    kw = dict(augment_cfg=aug, train=True, seed=cfg.seed)
    if cfg.mode == 'perframe':
        ds = FrameDataset(src, **kw)
        return NoisyCopies(ds, cfg.noise_copies, seed=cfg.seed) if cfg.noise_copies else ds
    if cfg.mode == 'keyframe':
        shift = cfg.motion_px / max(aug.resize_scale, 1e-6)   # dataset shifts in source pixels
        cls = FixedDistanceTriplets if cfg.key_distance_mode == 'constant' else TripletDataset
        return cls(src, max_distance=cfg.key_distance, shift_px_per_frame=shift, **kw)
    shift = cfg.motion_px / max(aug.resize_scale, 1e-6)
    return SequenceDataset(src, length=cfg.seq_len, shift_px_per_frame=shift, **kw)


def val_dataset(cfg: TrainConfig) -> Dataset | None:
    """Whole validation frames at ``input_hw`` (centre crop), or None without ``val_split``."""
    if not cfg.val_split:
        return None
    src = open_split(cfg, cfg.val_split)
    if cfg.val_max_frames and len(src.labelled()) > cfg.val_max_frames:
        lab = src.labelled()
        idx = np.linspace(0, len(lab) - 1, cfg.val_max_frames).round().astype(int)
        src = src.subset([lab[i] for i in idx])
    return FrameDataset(src, augment_config(cfg, src, train=False), train=False, seed=cfg.seed)
