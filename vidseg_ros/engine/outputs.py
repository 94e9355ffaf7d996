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
    """(H, W) uint8 ids -> (H, W, 3) uint8 RGB through a (256, 3) lookup (cv2.LUT per channel)."""
    ids = np.ascontiguousarray(class_ids)
    return cv2.LUT(cv2.merge([ids, ids, ids]), np.ascontiguousarray(color_lut).reshape(256, 1, 3))


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float, keep: np.ndarray | None = None) -> np.ndarray:
    """Blend the colour mask over the image; pixels where ``keep`` is False show the image alone."""
    if rgb.shape[:2] != color.shape[:2]:
        rgb = cv2.resize(rgb, (color.shape[1], color.shape[0]), interpolation=cv2.INTER_AREA)
    alpha = float(np.clip(alpha, 0.0, 1.0))
    rgb = np.ascontiguousarray(rgb)
    out = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
    if keep is not None:
        cv2.copyTo(rgb, np.logical_not(keep).view(np.uint8), out)
    return out


class Renderer:
    """Mask, colour mask and overlay of one frame for one ``ClassTable``, through lookup tables: with
    OpenCV on the host, or on the GPU when the engine left the frame there (``FrameResult.device_frame``),
    downloading only the uint8 images."""

    def __init__(self, table: ClassTable):
        self.table = table
        self.mask_lut = table.mask_lut()
        self.color_lut = table.color_lut()
        self.ignored = np.zeros(256, np.uint8)
        self.ignored[list(table.ignore)] = 1
        self._device_luts: dict = {}

    def render(self, result, rgb: np.ndarray, alpha: float, want: set[str]) -> dict[str, np.ndarray]:
        """The images in ``want`` ('mask', 'color', 'overlay') as uint8 arrays at the result's size."""
        if result.device_frame is not None:
            return self._render_device(*result.device_frame, alpha, want)
        ids = result.class_ids
        out = {}
        if 'mask' in want:
            out['mask'] = cv2.LUT(ids, self.mask_lut) if (self.table.remap or self.table.ignore) else ids
        if want & {'color', 'overlay'}:
            out['color'] = colorize(ids, self.color_lut)
        if 'overlay' in want:
            keep = (cv2.LUT(ids, self.ignored) == 0) if self.table.ignore else None
            out['overlay'] = overlay(rgb, out['color'], alpha, keep)
        return out

    def _render_device(self, ids, frame, alpha: float, want: set[str]):
        import torch
        import torch.nn.functional as F
        dev = ids.device
        if dev not in self._device_luts:
            self._device_luts[dev] = [torch.from_numpy(a).to(dev) for a in (self.mask_lut, self.color_lut,
                                                                             self.ignored.astype(bool))]
        mask_lut, color_lut, ignored = self._device_luts[dev]
        idx = ids.long()
        out = {}
        if 'mask' in want:
            out['mask'] = mask_lut[idx]
        if want & {'color', 'overlay'}:
            out['color'] = color_lut[idx]
        if 'overlay' in want:
            rgb = frame.permute(2, 0, 1)[None].float()
            if tuple(rgb.shape[-2:]) != tuple(ids.shape):
                rgb = F.interpolate(rgb, size=tuple(ids.shape), mode='bilinear', align_corners=False,
                                    antialias=True)
            rgb = rgb[0].permute(1, 2, 0)
            a = float(np.clip(alpha, 0.0, 1.0))
            blend = (rgb * (1.0 - a) + out['color'].float() * a).round_()
            if self.table.ignore:
                blend = torch.where(ignored[idx][..., None], rgb.round(), blend)
            out['overlay'] = blend.clamp_(0, 255).to(torch.uint8)
        return {k: v.cpu().numpy() for k, v in out.items()}
