"""Turning class ids into what consumers see: class table, remapping, colour mask, overlay (ROS-free)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ClassTable:
    """Class names and colours as published, plus the id remapping applied to ~/mask.

    Args:
        names: one name per model class id.
        palette: (N, 3) uint8 RGB colour per model class id.
        remap: published id per model class id, or None for identity.
        ignore: model class ids published as ``ignore_value`` and left transparent in overlays.
        ignore_value: mask value of ignored pixels.
    """

    names: tuple[str, ...]
    palette: np.ndarray
    remap: tuple[int, ...] | None = None
    ignore: tuple[int, ...] = ()
    ignore_value: int = 255

    @classmethod
    def build(cls, names, palette, *, name_override=(), palette_override=(), remap=(), ignore=(),
              ignore_value=255) -> 'ClassTable':
        """Checkpoint classes plus user overrides; raises ValueError with what does not fit."""
        names = list(name_override) or list(names)
        n = len(names)
        pal = np.asarray(palette_override if len(palette_override) else palette, dtype=np.int64).reshape(-1, 3)
        if len(pal) < n:
            raise ValueError(f'palette has {len(pal)} colours for {n} classes')
        if len(name_override) and len(name_override) != len(palette):
            raise ValueError(f'class_names has {len(name_override)} names, the model has {len(palette)} classes')
        if len(remap) and len(remap) != n:
            raise ValueError(f'class_remap has {len(remap)} entries, the model has {n} classes')
        if any(not 0 <= int(v) <= 255 for v in list(remap) + [ignore_value]):
            raise ValueError('class_remap and ignore_value must be in 0..255 (mono8 mask)')
        bad = [i for i in ignore if not 0 <= i < n]
        if bad:
            raise ValueError(f'ignore_classes {bad} are not model class ids (0..{n - 1})')
        return cls(tuple(names), np.clip(pal[:n], 0, 255).astype(np.uint8),
                   tuple(int(v) for v in remap) or None, tuple(int(i) for i in ignore), int(ignore_value))

    def mask_lut(self) -> np.ndarray:
        """256-entry uint8 lookup: model id -> published id (ignored -> ignore_value)."""
        lut = np.arange(256, dtype=np.uint8)
        if self.remap:
            lut[:len(self.remap)] = self.remap
        for i in self.ignore:
            lut[i] = self.ignore_value
        return lut

    def color_lut(self) -> np.ndarray:
        """(256, 3) uint8 lookup: model id -> colour (ignored and unknown ids black)."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[:len(self.palette)] = self.palette
        for i in self.ignore:
            lut[i] = 0
        return lut

    def to_json(self) -> str:
        """The table consumers need to read ~/mask: published id -> name, colour."""
        lut = self.mask_lut()
        classes = [{'model_id': i, 'id': int(lut[i]), 'name': name, 'color': self.palette[i].tolist(),
                    'ignored': i in self.ignore} for i, name in enumerate(self.names)]
        return json.dumps({'classes': classes, 'ignore_value': self.ignore_value})


def colorize(class_ids: np.ndarray, color_lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ids -> (H, W, 3) uint8 RGB through a (256, 3) lookup."""
    return color_lut[class_ids]


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float, keep: np.ndarray | None = None) -> np.ndarray:
    """Blend the colour mask over the image; pixels where ``keep`` is False show the image alone."""
    if rgb.shape[:2] != color.shape[:2]:
        rgb = cv2.resize(rgb, (color.shape[1], color.shape[0]), interpolation=cv2.INTER_AREA)
    alpha = float(np.clip(alpha, 0.0, 1.0))
    out = cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, color, alpha, 0.0)
    if keep is not None and not keep.all():
        out[~keep] = rgb[~keep]
    return out
