"""From a TrainConfig to datasets: sources, splits, frames-per-video subsets, augmentation."""
from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from vidseg_ros.config import ConfigError
from vidseg_ros.training import augment
from vidseg_ros.training.augment import AugmentConfig
from vidseg_ros.training.datasets import FrameDataset, RealClipDataset, SequenceDataset, TripletDataset, to_tensor
from vidseg_ros.data.image_headers import file_image_hw
from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.video import check_frame_sizes
from vidseg_ros.text import clip
from vidseg_ros.constants import (CAMVID_CLASSES, CAMVID_LICENCE, CAMVID_PALETTE, CAMVID_VOID, DAVIS_CLASSES,
                                  DAVIS_LICENCE, DAVIS_PALETTE)
from vidseg_ros.data.datasets.variants import STILL, add_noise, evenly_spaced, measure_noise_sigma
from vidseg_ros.data.datasets.layouts import DEFAULT_IGNORE, FrameSource, identity_lut, read_meta
from vidseg_ros.data.datasets.public_layouts import does_not_exist, guess_layout, open_source

from .config import TrainConfig, check_class_count
from .label_ids import IdsBeyondIgnored, raw_ids_are_class_ids

log = logging.getLogger(__name__)


def check_folder(key: str, root: str) -> None:
    """ConfigError when the folder a setting names does not exist; for a relative path it says where it was looked
    for: the shipped configs' ``../shared/data/camvid`` is relative to the current folder, not to the config."""
    if not Path(root).exists():
        raise ConfigError(f'{key}: {does_not_exist(root)}')


def dataset_info(cfg: TrainConfig) -> dict:
    """What the training data says about itself: class ``names``, ``colors``, ``ignore_index`` and
    ``licence`` (None where it says nothing). A folder dataset says it in its dataset.yaml, written by
    ``vidseg label-import --class-names/--classes`` (and ``licence:`` added by its owner). ``also`` lists
    what else shaped the weights (``also_trained_on``)."""
    return {**_data_info(cfg), 'also': also_trained_on(cfg)}


def also_trained_on(cfg: TrainConfig) -> list[dict]:
    """Sources besides ``data_root`` and ``init_from`` that shape the weights, each with its ``role``,
    ``path`` and ``licence`` (None where unrecorded): the real clips of the temporal loss and the teacher
    of unlabelled key frames. Their licences bind the weights as much as the labelled data's does."""
    out = []
    if cfg.temporal_weight and cfg.temporal_data:
        check_folder('temporal_data', cfg.temporal_data)
        try:
            layout = guess_layout(cfg.temporal_data, cfg.temporal_split)
            licence = (_data_info(replace(cfg, dataset=layout))['licence'] if layout in ('camvid', 'davis')
                       else read_meta(cfg.temporal_data).get('licence'))
        except (ValueError, OSError) as e:
            raise ConfigError(f'temporal_data: {e}') from e
        out.append({'role': 'clips for the temporal loss (labels unused)',
                    'path': f'{cfg.temporal_data}:{cfg.temporal_split}', 'root': cfg.temporal_data,
                    'licence': str(licence) if licence else None})
    if cfg.teacher and cfg.mode == 'keyframe':
        from vidseg_ros.models.checkpoint import CheckpointError, read_checkpoint
        try:
            licence = read_checkpoint(cfg.teacher)['meta'].get('provenance', {}).get('licence')
        except CheckpointError as e:
            raise ConfigError(f'teacher: {e}') from e
        out.append({'role': 'teacher masks for unlabelled key frames', 'path': cfg.teacher, 'root': None,
                    'licence': str(licence) if licence else None})
    return out


def _data_info(cfg: TrainConfig) -> dict:
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
    # read_meta has checked the types: classes a list of names, colors [r, g, b] triples of 0..255
    ignore, names, colors = meta.get('ignore_index'), meta.get('classes') or [], meta.get('colors')
    return {'names': [str(n) for n in names] or None, 'colors': colors,
            'ignore_index': None if ignore is None else int(ignore),
            'licence': str(meta['licence']) if meta.get('licence') else None}


def resolve_classes(cfg: TrainConfig, info: dict | None = None) -> TrainConfig:
    """``cfg`` with ``num_classes: 0`` and ``ignore_index: -1`` taken from the data, checked against it;
    ``info``: ``dataset_info(cfg)`` when the caller has read it already."""
    info = info or dataset_info(cfg)
    names, num, ignore = info['names'], cfg.num_classes, cfg.ignore_index
    where = f'{cfg.data_root}/dataset.yaml' if cfg.dataset == 'folder' else f'the {cfg.dataset} dataset'
    if names and num and num != len(names):
        raise ConfigError(f'num_classes: {num}, but {where} names {len(names)} classes '
                          f'({", ".join(names)[:200]}); set num_classes: {len(names)} (or 0 = from the data)')
    if not num:
        if cfg.dataset == 'folder':     # the others' classes are known without their data
            check_folder('data_root', cfg.data_root)
        if cfg.dataset == 'folder' and not Path(cfg.data_root).is_dir():
            raise ConfigError(f'data_root: {cfg.data_root} is not a folder (a `vidseg extract` dataset)')
        if not names:
            raise ConfigError(f'num_classes: 0 takes the class count from the data, but {where} names no '
                              'classes; set num_classes, or import labels with `vidseg label-import '
                              '--class-names a,b`')
        num = len(names)
    check_class_count(num, where)
    data_ignore = info['ignore_index']
    if ignore < 0:
        ignore = DEFAULT_IGNORE if data_ignore is None else data_ignore
    elif data_ignore is not None and ignore != data_ignore:
        raise ConfigError(f'ignore_index: {ignore}, but {where} marks unlabelled pixels with {data_ignore}; '
                          f'set ignore_index: {data_ignore} (or -1 = from the data)')
    if ignore < num:    # 256 classes and ignore 255: class 255 had an output channel that nothing ever trained
        name = f' {names[ignore]!r}' if names and ignore < len(names) else ''
        log.warning('ignore_index %d is also class %d%s of the %d: its pixels are left out of the loss and the '
                    'scores, so the model never learns it; give unlabelled pixels an id above the classes (e.g. '
                    '255 with at most 255 classes)', ignore, ignore, clip(name, 80), num)
    return replace(cfg, num_classes=num, ignore_index=ignore)


def open_split(cfg: TrainConfig, split: str, key: str = '') -> FrameSource:
    """Records of one split of ``cfg``'s dataset (``public_layouts.open_source``: CamVid split folders;
    DAVIS and folder ``head``/``tail``/``all`` or sequence names, optionally ``seqs:head``). ``key``: the
    setting that names the split, put before an error (train_split and val_split read the same folder)."""
    check_folder('data_root', cfg.data_root)
    return _ids_beyond_classes_ignored(cfg, _opened(key, cfg.data_root, split, cfg.dataset))


def _opened(key: str, root: str, split: str, dataset: str = 'auto') -> FrameSource:
    try:
        return open_source(root, split, dataset)
    except ValueError as e:
        if not key:
            raise
        raise ConfigError(f'{key}: {e}') from None


def _ids_beyond_classes_ignored(cfg: TrainConfig, src: FrameSource) -> FrameSource:
    """``src`` with label ids >= ``num_classes`` read as ``ignore_index``: a dataset that names its classes maps
    them so (``identity_lut``); one that names none stored raw ids, and an id without an output channel
    stopped training at its first step (IndexError). The first such id read is warned about once: as labels
    are loaded, not by reading every label file before training (a long, silent start on a large dataset)."""
    # A dataset naming its classes reads ids through the same identity table: ids beyond them (labels painted or
    # written after label-import, which warns) became ignore in silence, a class gone from training.
    if not raw_ids_are_class_ids(src) or cfg.num_classes <= 0 or cfg.ignore_index < 0:
        return src                                                    # mapped, or not resolved yet
    kept = {f.name: getattr(src, f.name) for f in fields(src) if f.name != 'label_lut'}
    return IdsBeyondIgnored(**kept, label_lut=identity_lut(cfg.ignore_index, cfg.num_classes),
                            known_classes=cfg.num_classes, raw_ignore=cfg.ignore_index, data_root=cfg.data_root)


# What to do about a split without labelled frames, by the setting that names it.
_NO_LABELS_FIX = {'train_split': 'label some of its frames (vidseg label-import, vidseg propagate) or name '
                                 'another split',
                  'val_split': "name another split (e.g. all, or sequence names), or val_split: '' to train "
                               'without validation',
                  'select_split': 'name held-out training sequences with labels (e.g. train:0006R0)'}


def _labelled_split(cfg: TrainConfig, key: str) -> FrameSource:
    """The split named by the setting ``key`` (``train_split``, ...); refuses one without a labelled frame
    (e.g. ``tail`` of a drive too short for the 5-frame gap), naming the split, the data and the fix."""
    split = getattr(cfg, key)
    src = open_split(cfg, split, key)
    if not src.labelled():
        raise ConfigError(f'{key}: {split!r} of {cfg.data_root}: none of its {len(src.records)} frames is labelled; '
                          f'{_NO_LABELS_FIX[key]}')
    return src


def frames_per_video(src: FrameSource, n: int) -> FrameSource:
    """Keep labels on at most ``n`` evenly spaced labelled frames per sequence (0 = all), picked as
    ``vidseg make-variant --kind per_sequence`` picks them (``variants.evenly_spaced``).

    Unlabelled frames stay in the source so temporal neighbours still exist.
    """
    if n <= 0:
        return src
    keep = set()
    for recs in src.sequences().values():
        keep.update((r.sequence, r.index) for r in evenly_spaced([r for r in recs if r.label is not None], n))
    return src.subset([r if (r.sequence, r.index) in keep else replace(r, label=None)
                       for r in src.records])


def augment_config(cfg: TrainConfig, src: FrameSource, train: bool) -> AugmentConfig:
    """Resize each frame so it covers ``input_hw``, then crop (random in training, centre otherwise). The scale
    was the first frame's for all: in a dataset of 640x480 and 1920x1080 frames, a 1080p frame trained and
    validated on crops of its centre third, at three times the scale the engine shows it."""
    crop = list(cfg.crop_hw or cfg.input_hw) if train else list(cfg.input_hw)
    return AugmentConfig(resize_scale=1.0, cover_hw=list(cfg.input_hw), crop_hw=crop,
                         scale_range=list(cfg.scale_range) if train else [1.0, 1.0],
                         hflip=cfg.hflip and train, jitter=cfg.jitter if train else 0.0,
                         hue_jitter=cfg.hue_jitter if train else 0.0, blur_prob=cfg.blur_prob if train else 0.0,
                         noise_std=cfg.noise_std if train else 0.0)


def _first_frame_scale(cfg: TrainConfig, src: FrameSource) -> float:
    """The scale that makes ``src``'s first frame cover ``input_hw`` (synthetic motion's pixels per frame are given
    at input_hw; the datasets move frames in source pixels). From its header: it was decoded whole for its size."""
    h0, w0 = file_image_hw(src.records[0].image)
    return max(cfg.input_hw[0] / h0, cfg.input_hw[1] / w0)


class NoisyCopies(FrameDataset):
    """The labelled frames plus ``copies`` noisy copies of each (the all-frames paper's control: as
    many training images as more frames would give, but without new content).

    A copy is what ``vidseg make-variant --kind noise`` writes: ``variants.add_noise`` on the source
    frame with the std measured between successive frames (``variants.measure_noise_sigma``), seeded
    by (``noise_seed``, sample), so each copy is one fixed image; augmentation then applies as to any
    frame.
    """

    def __init__(self, source: FrameSource, copies: int, sigma: float, augment_cfg: AugmentConfig,
                 train: bool = True, seed: int = 0):
        super().__init__(source, augment_cfg, train, seed)
        self.copies, self.sigma, self.noise_seed = copies, sigma, seed

    def __len__(self) -> int:
        return len(self.items) * (1 + self.copies)

    def __getitem__(self, i: int) -> dict:
        rec = self.items[i % len(self.items)]
        rgb = read_rgb(rec.image)
        if i >= len(self.items):
            rgb = add_noise(rgb, self.sigma, np.random.default_rng((self.noise_seed, i)))
        p = self._params(rgb.shape[:2], self._rng(i))
        return {'image': to_tensor(augment.apply_image(rgb, p)), 'label': self._label(rec, p, rgb.shape[:2]),
                'index': i}


class FixedDistanceTriplets(TripletDataset):
    """Triplets with the key exactly ``max_distance`` frames before the current frame (the
    ``distance_mode: constant`` setting): the real frame when it exists, else synthetic motion."""

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
    full = without_selection(cfg, _labelled_split(cfg, 'train_split'))
    src = frames_per_video(full, cfg.frames_per_video)
    aug = augment_config(cfg, src, train=True)
    kw = dict(augment_cfg=aug, train=True, seed=cfg.seed)
    if cfg.mode == 'perframe':
        if not cfg.noise_copies:
            return FrameDataset(src, **kw)
        return NoisyCopies(src, cfg.noise_copies, noise_sigma(full), **kw)
    shift = cfg.shift_px_per_frame / max(_first_frame_scale(cfg, src), 1e-6)   # datasets shift in source pixels
    if cfg.mode == 'keyframe':
        cls = FixedDistanceTriplets if cfg.distance_mode == 'constant' else TripletDataset
        return cls(src, max_distance=cfg.max_distance, shift_px_per_frame=shift, **kw)
    return SequenceDataset(src, length=cfg.seq_len, shift_px_per_frame=shift, **kw)


def noise_sigma(full: FrameSource) -> float:
    """``measure_noise_sigma`` of every frame of the training split, as make-variant measures it (logged)."""
    check_frame_sizes(full.records, labels=False)   # before it decodes them all (the datasets check theirs later)
    try:
        sigma = measure_noise_sigma(full)
    except ValueError as e:     # no two successive frames to compare
        raise ConfigError(f'noise_copies: {e}') from None
    if sigma == 0:
        raise ConfigError(f'noise_copies: {full.name}: {STILL}; set noise_copies: 0, or train on a noise '
                          'variant written with a sigma (vidseg make-variant --kind noise --sigma S)')
    log.info('noise copies: sigma %.2f (0..255) measured between successive frames', sigma)
    return sigma


def temporal_dataset(cfg: TrainConfig) -> Dataset | None:
    """Real clips of ``seq_len`` frames from ``temporal_data`` for the temporal-consistency loss, or None."""
    if not cfg.temporal_weight:
        return None
    check_folder('temporal_data', cfg.temporal_data)
    src = _opened('temporal_split', cfg.temporal_data, cfg.temporal_split)
    if not src.records:
        raise ConfigError(f'temporal_split: {cfg.temporal_split!r} of {cfg.temporal_data} has no frames; name '
                          'another split (e.g. all, or sequence names)')
    try:
        return RealClipDataset(src, cfg.seq_len, augment_config(cfg, src, train=True), train=True, seed=cfg.seed)
    except ValueError as e:     # no clip of seq_len frames: said of the temporal data, not the training data
        raise ConfigError(f'temporal_data: {e}') from None


def val_dataset(cfg: TrainConfig) -> Dataset | None:
    """Whole validation frames at ``input_hw`` (centre crop), or None without ``val_split``."""
    if not cfg.val_split:
        return None
    src = _labelled_split(cfg, 'val_split')
    if cfg.val_max_frames and len(src.labelled()) > cfg.val_max_frames:
        lab = src.labelled()
        idx = np.linspace(0, len(lab) - 1, cfg.val_max_frames).round().astype(int)
        src = src.subset([lab[i] for i in idx])
    return FrameDataset(src, augment_config(cfg, src, train=False), train=False, seed=cfg.seed)


# ---- the selection split (training/selection.py says why) ----
def _images(src: FrameSource) -> set[Path]:
    return {Path(r.image).resolve() for r in src.records}


def selection_source(cfg: TrainConfig) -> FrameSource | None:
    """The selection split's records (None when ``select_split`` is empty); refuses one that shares
    frames with ``val_split`` (selecting on the reported split) or that has no labelled frame."""
    if not cfg.select_split:
        return None
    src = _labelled_split(cfg, 'select_split')
    if cfg.val_split and _images(src) & _images(open_split(cfg, cfg.val_split, 'val_split')):
        raise ConfigError(f'select_split: {cfg.select_split!r} shares frames with val_split {cfg.val_split!r}; '
                          'choose on held-out training sequences (e.g. train:0006R0), report val')
    return src


def without_selection(cfg: TrainConfig, train: FrameSource) -> FrameSource:
    """``train`` minus every frame of the selection split (a held-out drive never trains)."""
    sel = selection_source(cfg)
    if sel is None:
        return train
    held = _images(sel)
    kept = [r for r in train.records if Path(r.image).resolve() not in held]
    if not [r for r in kept if r.label is not None]:
        raise ConfigError(f'select_split: {cfg.select_split!r} leaves no labelled training frames in '
                          f'{cfg.train_split!r}')
    return train.subset(kept)


def select_dataset(cfg: TrainConfig) -> Dataset | None:
    """Whole selection frames at ``input_hw`` (as validation sees them), or None."""
    src = selection_source(cfg)
    if src is None:
        return None
    return FrameDataset(src, augment_config(cfg, src, train=False), train=False, seed=cfg.seed)
