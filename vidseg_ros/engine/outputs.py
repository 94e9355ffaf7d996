"""Turning class ids into what consumers see: class table, remapping, colour mask, overlay, and the table
of published outputs (ROS-free)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from vidseg_ros.engine.resize import resize_image
from vidseg_ros.engine.upsample import to_u8
from vidseg_ros.text import name_problem


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
        n = len(names)
        if len(name_override) and len(name_override) != n:
            raise ValueError(f'class_names has {len(name_override)} names, the model has {n} classes: '
                             f'give one name per class, or [] for the model\'s names')
        # the operator's names go where a checkpoint's do (logs, /diagnostics, ~/class_table): check_meta's checks
        if problem := name_problem(name_override, 'class_names'):
            raise ValueError(problem)
        names = list(name_override) or list(names)
        pal = _palette_override(palette_override, n) if len(palette_override) else np.asarray(
            palette, dtype=np.int64).reshape(-1, 3)
        if len(pal) < n:
            raise ValueError(f'the model\'s palette has {len(pal)} colours for {n} classes')
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


def _palette_override(values, n_classes: int) -> np.ndarray:
    """The ``palette`` setting (flat r, g, b, r, g, b, ...) as (N, 3), or a ValueError naming the rule."""
    flat = np.asarray(values, dtype=np.int64).ravel()
    rule = (f'give 3 values (r, g, b, each 0..255) per colour, one colour per class '
            f'({n_classes} classes: {3 * n_classes} values), or [] for the model\'s palette')
    if len(flat) % 3 or len(flat) < 3 * n_classes:
        raise ValueError(f'palette has {len(flat)} values: {rule}')
    if flat.min() < 0 or flat.max() > 255:
        raise ValueError(f'palette holds {flat.min() if flat.min() < 0 else flat.max()}: {rule}')
    return flat.reshape(-1, 3)


def colorize(class_ids: np.ndarray, color_lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ids -> (H, W, 3) uint8 RGB through a (256, 3) lookup. OpenCV's applyColorMap with the
    table as a user colour map is that lookup (the rows as given, no BGR swap) and takes a third of the time
    of cv2.LUT on the ids merged to three channels (0.16 vs 0.49 ms at 640x480)."""
    return cv2.applyColorMap(np.ascontiguousarray(class_ids), np.ascontiguousarray(color_lut).reshape(256, 1, 3))


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float, keep: np.ndarray | None = None) -> np.ndarray:
    """Blend the colour mask over the image; pixels where ``keep`` is False show the image alone."""
    if rgb.shape[:2] != color.shape[:2]:
        rgb = resize_image(rgb, *color.shape[:2])   # per axis, as the device path's antialiased bilinear
    alpha = float(np.clip(alpha, 0.0, 1.0))
    rgb = np.ascontiguousarray(rgb)
    out = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
    if keep is not None:
        cv2.copyTo(rgb, np.logical_not(keep).view(np.uint8), out)
    return out


class Renderer:
    """Lookup tables of one ``ClassTable`` (on the host, and per device once used there)."""

    def __init__(self, table: ClassTable):
        self.table = table
        self.mask_lut = table.mask_lut()
        self.color_lut = table.color_lut()
        self.ignored = np.zeros(256, np.uint8)
        self.ignored[list(table.ignore)] = 1
        self._device_luts: dict = {}

    def device_luts(self, device):
        """(mask, colour, ignored) lookup tensors on ``device``."""
        if device not in self._device_luts:
            import torch
            self._device_luts[device] = [torch.from_numpy(a).to(device) for a in (
                self.mask_lut, self.color_lut, self.ignored.astype(bool))]
        return self._device_luts[device]

    def render(self, result, rgb: np.ndarray, alpha: float, want: set[str]) -> dict[str, np.ndarray]:
        """The images in ``want`` ('mask', 'color', 'overlay') as uint8 arrays at the result's size."""
        frame = FrameImages(self, result, rgb, alpha)
        return {name: getattr(frame, name)() for name in want}


class FrameImages:
    """The images of one frame, each rendered on first use (the colour mask once, for colour mask and
    overlay): with OpenCV on the host, or on the GPU when the engine left the frame there
    (``FrameResult.device_frame``), downloading only the uint8 images asked for."""

    def __init__(self, renderer: Renderer, result, rgb: np.ndarray, alpha: float = 0.5,
                 confidence_encoding: str = 'mono8'):
        self.result, self.rgb, self.renderer = result, rgb, renderer
        self.alpha = float(np.clip(alpha, 0.0, 1.0))
        self.confidence_encoding = confidence_encoding
        self._device = result.device_frame is not None
        self._color = None

    def _host(self, image):
        return image.cpu().numpy() if self._device else image

    def mask(self) -> np.ndarray:
        """Published class ids (remapped, ignored classes as ignore_value)."""
        r, table = self.renderer, self.renderer.table
        if self._device:
            ids = self.result.device_frame[0]
            return self._host(r.device_luts(ids.device)[0][ids.long()])
        ids = self.result.class_ids
        return cv2.LUT(ids, r.mask_lut) if (table.remap or table.ignore) else ids

    def _color_native(self):
        if self._color is None:
            if self._device:
                ids = self.result.device_frame[0]
                self._color = self.renderer.device_luts(ids.device)[1][ids.long()]
            else:
                self._color = colorize(self.result.class_ids, self.renderer.color_lut)
        return self._color

    def color(self) -> np.ndarray:
        """Palette colour per pixel (ignored classes black)."""
        return self._host(self._color_native())

    def overlay(self) -> np.ndarray:
        """The image blended with the colour mask; ignored classes show the image alone."""
        r, table = self.renderer, self.renderer.table
        if not self._device:
            ids = self.result.class_ids
            keep = (cv2.LUT(ids, r.ignored) == 0) if table.ignore else None
            return overlay(self.rgb, self._color_native(), self.alpha, keep)
        import torch
        import torch.nn.functional as F
        ids, frame = self.result.device_frame
        rgb = frame.permute(2, 0, 1)[None].float()
        if tuple(rgb.shape[-2:]) != tuple(ids.shape):
            rgb = F.interpolate(rgb, size=tuple(ids.shape), mode='bilinear', align_corners=False, antialias=True)
        rgb = rgb[0].permute(1, 2, 0)
        blend = (rgb * (1.0 - self.alpha) + self._color_native().float() * self.alpha).round_()
        if table.ignore:
            blend = torch.where(r.device_luts(ids.device)[2][ids.long()][..., None], rgb.round(), blend)
        return self._host(blend.clamp_(0, 255).to(torch.uint8))

    def confidence(self) -> np.ndarray | None:
        """Probability of the chosen class: uint8 0..255 for mono8, else float32 0..1."""
        conf = self.result.confidence
        if conf is None:
            return None
        if self.confidence_encoding == 'mono8':
            return conf if conf.dtype == np.uint8 else to_u8(conf)
        return conf / np.float32(255) if conf.dtype == np.uint8 else conf

    def class_prob(self) -> np.ndarray | None:
        """float32 probability of the selected class."""
        return self.result.class_prob


@dataclass(frozen=True)
class Output:
    """One image topic the segment node publishes per camera and frame.

    Args:
        name: topic under ``~/`` (``~/<camera>/`` with several cameras).
        setting: the ``SegmentNodeConfig`` field that switches it on.
        encoding: ROS image encoding, or a function of the settings giving it.
        render: ``FrameImages`` -> the image (None: nothing to publish this frame).
        on: the setting's value -> enabled.
        needs: what the engine must compute beyond class ids ('confidence', 'class_prob').
    """

    name: str
    setting: str
    encoding: str | Callable[[Any], str]
    render: Callable[[FrameImages], np.ndarray | None]
    on: Callable[[Any], bool] = bool
    needs: frozenset = frozenset()

    def enabled(self, cfg) -> bool:
        return bool(self.on(getattr(cfg, self.setting)))

    def encoding_for(self, cfg) -> str:
        return self.encoding if isinstance(self.encoding, str) else self.encoding(cfg)


# The segment node's image outputs: it creates, publishes and destroys one publisher per entry, and
# README documents the settings. A new output is one entry here (plus its setting when none fits).
OUTPUTS: tuple[Output, ...] = (
    Output('mask', 'publish_mask', 'mono8', FrameImages.mask),
    Output('color_mask', 'publish_color_mask', 'rgb8', FrameImages.color),
    Output('overlay', 'publish_overlay', 'rgb8', FrameImages.overlay),
    Output('confidence', 'publish_confidence', lambda cfg: cfg.confidence_encoding, FrameImages.confidence,
           needs=frozenset({'confidence'})),
    Output('class_prob', 'class_prob_index', '32FC1', FrameImages.class_prob, on=lambda index: index >= 0,
           needs=frozenset({'class_prob'})),
)


def active_outputs(cfg, subscribed: Callable[[str], bool]) -> list[Output]:
    """The outputs switched on in ``cfg`` that someone listens to (``subscribed(name)``)."""
    return [o for o in OUTPUTS if o.enabled(cfg) and subscribed(o.name)]


def step_options(outputs: list[Output], cfg) -> dict:
    """``StreamSegmenter.step`` keywords for what ``outputs`` need (nothing costly for unused outputs)."""
    needs = set().union(*(o.needs for o in outputs))
    return {'want_confidence': 'confidence' in needs,
            'class_prob': cfg.class_prob_index if 'class_prob' in needs else None,
            'confidence_u8': cfg.confidence_encoding == 'mono8'}


def published_hw(cfg, engine, image_hw: tuple[int, int]) -> tuple[int, int] | None:
    """``StreamSegmenter.step``'s output_hw for ``cfg.mask_resolution``: None (the input image's size), or
    for 'network' the size the frame is resized to, without the stride padding the network input adds:
    stretching the image over the padded size would change its aspect (and camera_info's scale)."""
    return None if cfg.mask_resolution == 'input' else engine.resized_hw(image_hw)


def render_outputs(outputs: list[Output], renderer: Renderer, result, rgb: np.ndarray, cfg) -> dict:
    """{name: (image, encoding)} of ``outputs`` for one engine result."""
    frame = FrameImages(renderer, result, rgb, cfg.overlay_alpha, cfg.confidence_encoding)
    images = {}
    for o in outputs:
        image = o.render(frame)
        if image is not None:
            images[o.name] = (image, o.encoding_for(cfg))
    return images
