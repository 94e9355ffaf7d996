"""From a TrainConfig to datasets: sources, splits, frames-per-video subsets, augmentation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
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
from vidseg_ros.data.datasets.layouts import (DEFAULT_IGNORE, FrameRecord, FrameSource, does_not_exist, guess_layout,
                                              identity_lut, open_source, read_label_file, read_meta)

from .config import TrainConfig, check_class_count

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


def open_split(cfg: TrainConfig, split: str) -> FrameSource:
    """Records of one split of ``cfg``'s dataset (``layouts.open_source``: CamVid split folders;
    DAVIS and folder ``head``/``tail``/``all`` or sequence names, optionally ``seqs:head``)."""
    check_folder('data_root', cfg.data_root)
    return _ids_beyond_classes_ignored(cfg, open_source(cfg.data_root, split, cfg.dataset))


_warned_ids: set[str] = set()     # data roots already warned about (one warning per dataset and process)


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


def raw_ids_are_class_ids(src: FrameSource) -> bool:
    """Whether ``src``'s label files hold class ids as they are: no ``label_lut``, or one that keeps the ids
    below some count and makes every other value its ignore value (a folder dataset naming its classes,
    CamVid, Cityscapes train ids); not DAVIS, whose every value above 0 is the object."""
    if src.label_lut is None:
        return True
    kept = src.label_lut == np.arange(len(src.label_lut))
    first_changed = len(kept) if kept.all() else int(np.argmin(kept))
    return bool((src.label_lut[first_changed:] == src.ignore_index).all())


def ids_beyond(raw: np.ndarray, known_classes: int, *ignore: int | None) -> np.ndarray:
    """(256,) pixels of each id of the uint8 label ``raw`` that is ``known_classes`` or more and none of ``ignore``
    (None entries skipped); zeros where there is none."""
    counts = np.bincount(raw.ravel(), minlength=256)[:256]
    counts[:known_classes] = 0
    for v in ignore:
        if v is not None and 0 <= v < 256:
            counts[v] = 0
    return counts


def beyond_summary(beyond: np.ndarray, files: list[str], labels_read: int, scored_pixels: int | None = None) -> dict:
    """Label ids beyond the classes counted (``beyond``: (256,) pixels per id, ``ids_beyond`` summed; ``files``:
    the label files holding any, of ``labels_read``), for a report: ``pixels`` beyond the classes, ``ids`` (id ->
    pixels, the 20 most frequent), ``label_files`` holding any of ``label_files_read``, the ``first`` such file,
    and their ``share`` of ``scored_pixels`` + ``pixels`` (None when not given)."""
    total = int(beyond.sum())
    top = sorted(np.flatnonzero(beyond).tolist(), key=lambda v: -beyond[v])[:20]
    return {'pixels': total, 'ids': {int(v): int(beyond[v]) for v in sorted(top)},
            'label_files': len(files), 'label_files_read': labels_read,
            'first': files[0] if files else None,
            'share': total / (scored_pixels + total) if scored_pixels is not None and total else None}


def beyond_text(summary: dict, beyond: np.ndarray, known_classes: int, ignore: tuple, what: str, fix: str) -> str:
    """One line for ``summary`` (:func:`beyond_summary` of ``beyond``): how many pixels of which ids, beyond
    ``known_classes`` and none of ``ignore`` (None entries skipped), ``what`` (e.g. 'were left out of the
    scores'), where, and ``fix``. The one wording of vidseg eval's and finetune's warnings."""
    ids = ', '.join(str(v) for v in summary['ids'])
    more = ' and more' if len(summary['ids']) < int((beyond > 0).sum()) else ''
    share = f' ({summary["share"]:.1%} of the labelled pixels)' if summary['share'] is not None else ''
    ignored = ' or '.join(str(v) for v in dict.fromkeys(ignore) if v is not None)
    return (f'{summary["pixels"]} label pixels{share} in {summary["label_files"]} of {summary["label_files_read"]} '
            f'label files hold ids {ids}{more}: beyond the {known_classes} classes (0..{known_classes - 1}) and '
            f'not the ignore id {ignored}; they {what} (first: {clip(summary["first"])}); {fix}')


def counting_ids_beyond(src: FrameSource, known_classes: int, also_ignore: int | None = None) -> FrameSource:
    """``src`` as it reads labels, counting the pixels of every id >= ``known_classes`` other than the data's
    ignore value (and ``also_ignore``, e.g. the model's): ``vidseg eval`` says how many were left out of the
    scores, and of which ids (:meth:`IdsBeyondIgnored.beyond_summary`). ``src`` unchanged where its label files
    are not class ids (``raw_ids_are_class_ids``)."""
    if not raw_ids_are_class_ids(src) or known_classes <= 0:
        return src
    kept = {f.name: getattr(src, f.name) for f in fields(src)}
    return IdsBeyondIgnored(**kept, known_classes=known_classes, raw_ignore=src.ignore_index, data_root=src.name,
                            also_ignore=also_ignore, warn_first=False)


@dataclass
class IdsBeyondIgnored(FrameSource):
    """A source of raw label ids read through ``label_lut`` (training: one that makes ids >= ``known_classes``
    ignore). Each label file's ids beyond the classes (other than ``raw_ignore`` and ``also_ignore``) are counted
    once (``beyond``, ``beyond_files``, ``labels_read``); with ``warn_first`` the first such id read is warned
    about, once per data root and process (per DataLoader worker with num_workers)."""

    known_classes: int = 0
    raw_ignore: int = DEFAULT_IGNORE
    data_root: str = ''
    also_ignore: int | None = None
    warn_first: bool = True
    beyond: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))   # pixels per id
    beyond_files: list[str] = field(default_factory=list)
    labels_read: int = 0
    _counted: set = field(default_factory=set, repr=False)

    def read_label(self, rec: FrameRecord) -> np.ndarray | None:
        if rec.label is None:
            return None
        raw = read_label_file(rec.label)
        if str(rec.label) not in self._counted:
            self._count(str(rec.label), raw)
        return self.label_lut[raw] if self.label_lut is not None else raw

    def _count(self, label: str, raw: np.ndarray) -> None:
        self._counted.add(label)
        self.labels_read += 1
        counts = ids_beyond(raw, self.known_classes, self.raw_ignore, self.also_ignore)
        if not counts.any():
            return
        self.beyond += counts
        self.beyond_files.append(label)
        if self.warn_first and self.data_root not in _warned_ids:
            _warned_ids.add(self.data_root)
            log.warning('%s: label id %d >= num_classes %d (%s/dataset.yaml %s); ids from %d up are ignored '
                        '(as ignore_index %d); %s', label, int(np.flatnonzero(counts)[0]), self.known_classes,
                        self.data_root, self._named(), self.known_classes, self.raw_ignore, self._fix())

    def beyond_summary(self, scored_pixels: int | None = None) -> dict:
        """What was counted, for a report (:func:`beyond_summary`)."""
        return beyond_summary(self.beyond, self.beyond_files, self.labels_read, scored_pixels)

    def beyond_text(self, summary: dict, what: str, fix: str | None = None) -> str:
        """One line for ``summary`` (:func:`beyond_text`), with training's ``fix`` by default."""
        return beyond_text(summary, self.beyond, self.known_classes, (self.raw_ignore, self.also_ignore), what,
                           fix or self._fix())

    def _named(self) -> str:
        if not self.class_names:
            return 'names no classes'
        return f'names {len(self.class_names)}: ' + ', '.join(map(repr, self.class_names))[:200]

    def _fix(self) -> str:
        if not self.class_names:
            return 'set num_classes, or name the classes with vidseg label-import --class-names'
        return ('name that class in dataset.yaml classes, or re-import the labels with vidseg label-import --map '
                'FROM:TO')


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
    src = open_split(cfg, split)
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
    src = open_source(cfg.temporal_data, cfg.temporal_split)
    if not src.records:
        raise ConfigError(f'temporal_split: {cfg.temporal_split!r} of {cfg.temporal_data} has no frames; name '
                          'another split (e.g. all, or sequence names)')
    return RealClipDataset(src, cfg.seq_len, augment_config(cfg, src, train=True), train=True, seed=cfg.seed)


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
    if cfg.val_split and _images(src) & _images(open_split(cfg, cfg.val_split)):
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
