"""The selection split: held-out training sequences that choose the best epoch, so val is never peeked at.

CamVid's val run (0016E5, 15 Hz) comes from a drive that also supplies training frames, so choosing
epochs on val rewards memorising that drive. ``select_split: train:0006R0`` holds a whole drive out
of training instead; the best checkpoint is chosen on it and val is scored once, on that checkpoint,
at the end. ``select_split`` empty keeps the old protocol (best epoch on val), and says so.
"""
from __future__ import annotations

from .config import TrainConfig


def selection_note(cfg: TrainConfig) -> str:
    """What chose the shipped weights, for the checkpoint's provenance and the model card."""
    if cfg.select_split:
        return (f'best epoch by mIoU on the selection split {cfg.select_split} (held out of training); '
                f'{cfg.val_split or "no val split"} scored once on that checkpoint')
    if cfg.val_split:
        return f'best epoch by mIoU on {cfg.val_split}, the reported split (selected on what is reported)'
    return 'last epoch (no selection split, no validation)'
