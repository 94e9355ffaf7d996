"""Training settings: one dataclass, one YAML file per run, stored resolved in every checkpoint."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from vidseg_ros.config import ConfigError, load_config, setting, to_dict

MODES = ('perframe', 'keyframe', 'sequence')
# Settings that count something, where 0 means off, all or as is and a negative value means nothing.
COUNTS = ('steps_per_epoch', 'num_threads', 'num_workers', 'warmup_steps', 'val_every', 'val_max_frames',
          'frames_per_video', 'noise_copies', 'tbptt')


@dataclass
class TrainConfig:
    """Everything a training run needs; each field is also a YAML key in ``config/train/*.yaml``."""

    name: str = setting('run', 'Run name: checkpoints go to <runs_dir>/<name>/')
    arch: str = setting('keyframe_fpn', 'Model family (a key of vidseg_ros.models.MODELS)')
    arch_config: dict = setting({}, 'Keyword arguments for create_model(arch, ...), e.g. '
                                    '{cached_levels: 1} or {size: small_deep, temporal_cell: cgru}')
    mode: str = setting('perframe', 'What one sample is: a single labelled frame, a (key, current) '
                                    'triplet for the key-frame loss, or a clip for recurrent models',
                        MODES)
    dataset: str = setting('camvid', 'Dataset layout of data_root', ('camvid', 'davis', 'folder'))
    data_root: str = setting('../shared/data/camvid', 'Dataset folder (read in place, never copied)',
                             path=True)
    train_split: str = setting('train', 'Split folder (CamVid); head / tail / all or sequence names, '
                                        'optionally seq1,seq2:head (DAVIS, folder)')
    val_split: str = setting('val', 'Validation split; empty = no validation')
    select_split: str = setting('', 'Selection split that chooses the best epoch (best.pt), held out of '
                                    'training, e.g. train:0006R0 (a whole CamVid drive); val is then '
                                    'scored once at the end. Empty = choose on val_split (peeks)')
    num_classes: int = setting(0, 'Number of classes predicted (void excluded); 0 = as many as the '
                                  'dataset names (CamVid 11, DAVIS 2, a folder\'s dataset.yaml classes)')
    ignore_index: int = setting(-1, 'Label value ignored by the loss and the metrics; -1 = the '
                                    'dataset\'s own (CamVid 11, DAVIS 255, a folder\'s dataset.yaml)')
    input_hw: list[int] = setting([192, 256], 'Network input size [H, W] for whole frames (validation, '
                                              'inference; multiples of 32): frames are resized to cover it')
    crop_hw: list[int] = setting([], 'Training crop [H, W] taken from the resized frame; empty = input_hw')
    scale_range: list[float] = setting([0.8, 1.25], 'Random rescale range before the crop; [1, 1] = off')
    hflip: bool = setting(True, 'Random horizontal flip (applied consistently within a sample)')
    jitter: float = setting(0.2, 'Brightness, contrast and saturation factors drawn from [1 - jitter, 1 + jitter]')
    hue_jitter: float = setting(0.0, 'Hue shift drawn from [-hue_jitter, hue_jitter] turns; 0 = off')
    blur_prob: float = setting(0.0, 'Probability of a Gaussian blur (sigma 0.1-1.5 px); 0 = off')
    noise_std: float = setting(0.0, 'Gaussian pixel noise with std drawn from [0, noise_std] (0..255); 0 = off')
    frames_per_video: int = setting(0, 'Use at most this many labelled frames per sequence, evenly '
                                       'spaced (the middle one for 1, as make-variant picks them); '
                                       '0 = all (the all-frames protocol)')
    noise_copies: int = setting(0, 'Add this many noisy copies of each kept frame (perframe mode; the '
                                   'frames_per_video experiment): Gaussian noise with the std measured '
                                   'between successive frames, as make-variant --kind noise writes them')
    epochs: int = setting(30, 'Number of passes over the training set')
    steps_per_epoch: int = setting(0, 'Cap on optimiser steps per epoch; 0 = the whole set')
    batch_size: int = setting(8, 'Samples per optimiser step (per process under torchrun)')
    optimizer: str = setting('adamw', 'Optimiser', ('adam', 'adamw'))
    lr: float = setting(2e-3, 'Peak learning rate')
    weight_decay: float = setting(1e-4, 'Weight decay (decoupled for adamw)')
    lr_policy: str = setting('cosine', 'Schedule per step: cosine to lr*lr_final_ratio, exponential '
                                       'decay to the same end point (key-frame work), or constant',
                             ('cosine', 'exp', 'constant'))
    lr_final_ratio: float = setting(0.01, 'Learning rate at the end as a fraction of lr: 0..1, above 0 for exp')
    warmup_steps: int = setting(0, 'Linear warm-up steps')
    class_balanced: bool = setting(False, 'Class-balanced cross-entropy (weights ~ 1/frequency, '
                                          'as in the one-shot VOS work) instead of plain CE')
    ohem_fraction: float = setting(0.0, 'Online hard example mining: average the loss over this fraction '
                                        'of labelled pixels with the highest loss (perframe, sequence); 0 = off')
    ema_decay: float = setting(0.0, 'Keep an exponential moving average of the weights with this decay '
                                    '(e.g. 0.999); it is what is validated and saved. 0 = off')
    amp: bool = setting(True, 'Mixed precision on GPU (ignored on CPU)')
    seed: int = setting(0, 'Seed for python, numpy and torch (data order, augmentation, init)')
    deterministic: bool = setting(True, 'torch.use_deterministic_algorithms (warn only)')
    num_workers: int = setting(0, 'DataLoader worker processes')
    num_threads: int = setting(0, 'torch.set_num_threads for CPU training; 0 = leave as is')
    device: str = setting('auto', 'auto, cpu, cuda, cuda:N')
    runs_dir: str = setting('runs', 'Where per-epoch checkpoints and logs go (git-ignored)',
                            path=True)
    output: str = setting('', 'Also write the best checkpoint here (e.g. models/camvid_fpn.pt)',
                          path=True)
    init_from: str = setting('', 'Start from these weights (a checkpoint path or a shipped model\'s name): '
                                 'every tensor whose name and shape match is kept, the rest (the '
                                 'classifier for a new class count) is freshly initialised',
                             path=True)
    freeze: list[str] = setting([], 'Parameter-name prefixes kept fixed, BatchNorm statistics included '
                                    '(e.g. [encoder] for a new class set; a warm-started recurrent_fpn '
                                    'trains only its cell with [encoder, laterals, outputs, head_proj, '
                                    'classifier]); empty = train everything')
    teacher: str = setting('', 'Checkpoint producing teacher masks for unlabelled key frames; '
                               'empty = warp the current frame\'s label (synthetic motion)',
                           path=True)
    max_distance: int = setting(5, 'Key-to-current distance d in frames (constant mode) or its max',
                                renamed_from=('key_distance',))
    distance_mode: str = setting('random', 'd uniform in [1, max_distance] or constant',
                                 ('random', 'constant'), renamed_from=('key_distance_mode',))
    feature_weight: float = setting(0.01, 'lambda of the L1 term between high-level features')
    seq_len: int = setting(5, 'Clip length for recurrent training (labelled frame at random position)')
    tbptt: int = setting(0, 'Truncated BPTT: detach the hidden state every this many steps; 0 = off')
    shift_px_per_frame: float = setting(4.0, 'Synthetic motion: mean pan per frame in pixels at input_hw '
                                             '(CamVid has no raw frames between labelled ones)',
                                        renamed_from=('motion_px',))
    temporal_weight: float = setting(0.0, 'Weight of the temporal-consistency loss on real unlabelled clips '
                                          '(mode sequence): each frame\'s class probabilities vs its '
                                          'predecessor\'s carried by optical flow; 0 = off')
    temporal_data: str = setting('', 'Real video for that loss (a DAVIS, CamVid-layout or extracted folder, '
                                     'read in place; its labels are not used)',
                                 path=True)
    temporal_split: str = setting('all', 'Split of temporal_data (e.g. head, or sequence names)')
    val_every: int = setting(1, 'Validate every this many epochs (0 = only at the end)')
    val_max_frames: int = setting(0, 'Cap on validation frames; 0 = all')


def load_train_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """TrainConfig from a YAML file plus overrides, with cross-field checks."""
    cfg = load_config(TrainConfig, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that a type check cannot do; raise ConfigError saying how to fix it."""
    _check_name(cfg.name)
    _check_numbers(cfg)
    if len(cfg.input_hw) != 2 or any(v <= 0 or v % 32 for v in cfg.input_hw):
        # the suggestion is always two sides: [64] suggested [64], [] suggested []
        fix = [max(32, round(v / 32) * 32) for v in (cfg.input_hw * 2)[:2] or [192, 256]]
        raise ConfigError(f'input_hw: {cfg.input_hw} must be two multiples of 32, e.g. {fix}')
    if cfg.crop_hw and (len(cfg.crop_hw) != 2 or any(v <= 0 or v % 32 for v in cfg.crop_hw)):
        raise ConfigError(f'crop_hw: {cfg.crop_hw} must be empty or two multiples of 32')
    if len(cfg.scale_range) != 2 or not 0 < cfg.scale_range[0] <= cfg.scale_range[1]:
        raise ConfigError(f'scale_range: {cfg.scale_range} must be [low, high] with 0 < low <= high')
    if cfg.mode == 'sequence' and cfg.seq_len < 1:
        raise ConfigError('seq_len must be >= 1 for mode: sequence')
    if cfg.mode == 'keyframe' and cfg.max_distance < 1:
        raise ConfigError('max_distance must be >= 1 for mode: keyframe')
    if not 0 <= cfg.ohem_fraction <= 1 or not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f'ohem_fraction ({cfg.ohem_fraction}) must be in 0..1 and ema_decay '
                          f'({cfg.ema_decay}) in [0, 1)')
    if cfg.temporal_weight < 0 or (cfg.temporal_weight and (cfg.mode != 'sequence' or not cfg.temporal_data)):
        raise ConfigError(f'temporal_weight ({cfg.temporal_weight}) must be >= 0, and above 0 it needs mode: '
                          f'sequence (this run: {cfg.mode}) and temporal_data (real video to take clips from)')
    if cfg.noise_copies and cfg.mode != 'perframe':   # only the perframe data set makes the noisy copies
        raise ConfigError(f'noise_copies ({cfg.noise_copies}) applies to mode perframe only, not {cfg.mode}; '
                          'set noise_copies: 0, or mode: perframe')
    if cfg.ohem_fraction and cfg.mode == 'keyframe':
        raise ConfigError('ohem_fraction applies to modes perframe and sequence, not keyframe; set it to 0')
    _check_arch_config(cfg)
    if cfg.num_classes < 0 or not -1 <= cfg.ignore_index <= 255:
        raise ConfigError(f'num_classes ({cfg.num_classes}) must be >= 0 and ignore_index '
                          f'({cfg.ignore_index}) in -1..255 (0 / -1 = from the dataset)')
    check_class_count(cfg.num_classes, 'num_classes')
    for key in ('epochs', 'batch_size'):
        if getattr(cfg, key) < 1:
            raise ConfigError(f'{key} must be >= 1')
    docs = {f.name: f.metadata['doc'] for f in fields(cfg)}
    for key in COUNTS:
        if getattr(cfg, key) < 0:
            raise ConfigError(f'{key}: {getattr(cfg, key)} must be >= 0 ({docs[key]})')
    # exp decays as lr * lr_final_ratio ** t, so 0 would stop training after the first step and a
    # negative ratio gives complex rates; cosine ends at lr * lr_final_ratio, where 0 is a valid end.
    exp = cfg.lr_policy == 'exp'
    if not (0 < cfg.lr_final_ratio <= 1 if exp else 0 <= cfg.lr_final_ratio <= 1):
        raise ConfigError(f'lr_final_ratio: {cfg.lr_final_ratio} must be in {"(0, 1]" if exp else "[0, 1]"} '
                          f'for lr_policy: {cfg.lr_policy} (the final learning rate as a fraction of lr)')


# Number settings and the values that make sense (inclusive): outside them a run stopped with torch's words
# ('Invalid weight_decay value: -1.0'), or augmented frames into noise (jitter 5: brightness factors down to -4).
_NUMBER_RANGES = {'weight_decay': (0.0, math.inf), 'jitter': (0.0, 1.0), 'hue_jitter': (0.0, 0.5),
                  'blur_prob': (0.0, 1.0), 'noise_std': (0.0, 255.0), 'feature_weight': (0.0, math.inf)}


def _check_numbers(cfg: TrainConfig) -> None:
    """Every float setting finite (lr .inf diverged at step 2, scale_range [1, .inf] was an OverflowError), lr not
    negative (0 is taken: the weights stay, only BatchNorm statistics follow the data; the loop says so), and the
    settings of ``_NUMBER_RANGES`` within theirs."""
    docs = {f.name: f.metadata['doc'] for f in fields(cfg)}
    for key, value in ((f.name, getattr(cfg, f.name)) for f in fields(cfg)):
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(f'{key}: {value} must be finite ({docs[key]})')
    if cfg.lr < 0:
        raise ConfigError(f'lr: {cfg.lr} must be 0 or more (the peak learning rate, e.g. 1e-3)')
    for key, (low, high) in _NUMBER_RANGES.items():
        if not low <= getattr(cfg, key) <= high:
            upper = f'..{high:g}' if math.isfinite(high) else ' or more'
            raise ConfigError(f'{key}: {getattr(cfg, key)} must be {low:g}{upper} ({docs[key]})')


def check_class_count(count: int, where: str) -> None:
    """ConfigError when a run would train more classes than a mask can hold (class 299 came out as id 43)."""
    from vidseg_ros.constants import MAX_CLASSES
    from vidseg_ros.models.model_file_checks import CLASS_LIMIT
    if count > MAX_CLASSES:
        raise ConfigError(f'{where}: {count} classes; {CLASS_LIMIT}')
    if count == 1:   # a softmax over one class is 1 everywhere: loss 0 and mIoU 1 from the first step on
        raise ConfigError(f'{where}: 1 class: a model of one class predicts it for every pixel (loss 0, mIoU 1, '
                          'nothing learnt); name the background as a class too, e.g. [background, object]')


def _check_name(name: str) -> None:
    """The run's folder is <runs_dir>/<name>: '' or '..' would put it in runs_dir itself or above, a
    separator somewhere else (and NUL is no file name at all)."""
    if not name.strip() or name in ('.', '..') or any(c in name for c in '/\\\0'):
        raise ConfigError(f'name: {name!r} must be a plain folder name (not empty, . or .., without / \\ or NUL): '
                          'the run writes to <runs_dir>/<name>/; e.g. name: camvid_fpn')


def _check_arch_config(cfg: TrainConfig) -> None:
    """arch_config fits the model's constructor (names, types) before any data is read; num_classes is
    not part of it: training sets it from num_classes or the dataset's classes."""
    if 'num_classes' in cfg.arch_config:
        raise ConfigError(f'arch_config.num_classes: {cfg.arch_config["num_classes"]!r} is not set here: the '
                          'class count comes from the data (num_classes: 0 = the dataset\'s classes); remove it '
                          'from arch_config, or set num_classes')
    from vidseg_ros.models import resolve_arch_config
    try:
        resolve_arch_config(cfg.arch, **cfg.arch_config)
    except ValueError as e:     # an unknown arch, argument or a wrong type (ArchConfigError)
        raise ConfigError(f'arch / arch_config: {e}') from None


def config_dict(cfg: TrainConfig) -> dict:
    """Plain dict for the checkpoint's ``train_config``."""
    return to_dict(cfg)
