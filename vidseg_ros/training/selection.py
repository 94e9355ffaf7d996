"""The selection split: held-out training sequences that choose the best epoch, so val is never peeked at.

CamVid's val run (0016E5, 15 Hz) comes from a drive that also supplies training frames, so choosing
epochs on val rewards memorising that drive. ``select_split: train:0006R0`` holds a whole drive out
of training instead; the best checkpoint is chosen on it and val is scored once, on that checkpoint,
at the end. ``select_split`` empty keeps the old protocol (best epoch on val), and says so.
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from vidseg_ros.config import ConfigError
from vidseg_ros.data.datasets.layouts import FrameSource

from .config import TrainConfig


def _images(src: FrameSource) -> set[Path]:
    return {Path(r.image).resolve() for r in src.records}


def selection_source(cfg: TrainConfig) -> FrameSource | None:
    """The selection split's records (None when ``select_split`` is empty); refuses one that shares
    frames with ``val_split`` (selecting on the reported split) or that has no labelled frame."""
    if not cfg.select_split:
        return None
    from .data_setup import open_split
    src = open_split(cfg, cfg.select_split)
    if not src.labelled():
        raise ConfigError(f'select_split: {cfg.select_split!r} has no labelled frames')
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
    from .data_setup import augment_config
    from .datasets import FrameDataset
    return FrameDataset(src, augment_config(cfg, src, train=False), train=False, seed=cfg.seed)


def selection_note(cfg: TrainConfig) -> str:
    """What chose the shipped weights, for the checkpoint's provenance and the model card."""
    if cfg.select_split:
        return (f'best epoch by mIoU on the selection split {cfg.select_split} (held out of training); '
                f'{cfg.val_split or "no val split"} scored once on that checkpoint')
    if cfg.val_split:
        return f'best epoch by mIoU on {cfg.val_split}, the reported split (selected on what is reported)'
    return 'last epoch (no selection split, no validation)'


def score_best_once(model, val_set: Dataset, cfg: TrainConfig, device, rank: int, world: int, state: dict,
                    init: dict | None = None) -> dict:
    """Val scores of the chosen checkpoint, computed once after training (every rank takes part) and
    stored beside the selection scores in ``best.pt`` (and ``cfg.output``); ``model`` ends with its weights."""
    import torch.distributed as dist

    from vidseg_ros.models.checkpoint import read_checkpoint

    from .loop import _unwrap, save_model, validate_frames
    run_dir = Path(cfg.runs_dir) / cfg.name
    if world > 1:
        dist.barrier()          # rank 0 has written best.pt
    _unwrap(model).load_state_dict(read_checkpoint(run_dir / 'best.pt', map_location=device)['state_dict'])
    val = validate_frames(model, val_set, cfg, device, rank, world)
    if rank == 0:
        best = next((r for r in state['history'] if r.get('select_mIoU') == state['best']), {})
        metrics = {**best, **{f'val_{k}': v for k, v in val.items()}}
        for path in [run_dir / 'best.pt'] + ([Path(cfg.output)] if cfg.output else []):
            save_model(path, model, cfg, metrics, init)
    return val
