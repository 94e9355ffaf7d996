"""Augmentations drawn once per sample and applied identically to every frame of it.

Temporal models learn from the *difference* between frames, so a key frame and its current frame
(or all frames of a sequence) must get the same crop, scale, flip and colour change. Each step is an
affine map (scale, crop offset, flip) followed by photometric changes (brightness, contrast,
saturation, hue, blur, noise: the same draw, and the same noise field, on every frame of a sample);
labels only see the affine map, with nearest-neighbour sampling, and out-of-image pixels become the
ignore index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from vidseg_ros.config import setting


@dataclass
class AugmentConfig:
    """Training-time augmentation; the defaults leave frames unchanged."""

    resize_scale: float = setting(1.0, 'Resize every frame by this factor first (e.g. 0.5 for CPU training)')
    cover_hw: list[int] = setting([], 'Resize each frame first so it covers [H, W] (then by resize_scale), as the '
                                      'engine fits each frame to input_hw; empty = no such resize')
    crop_hw: list[int] = setting([], 'Output size [H, W] (random crop in training, centre crop '
                                     'otherwise); empty = whole frame. Pads with ignore when larger')
    scale_range: list[float] = setting([1.0, 1.0], 'Random extra scale factor range [min, max]')
    hflip: bool = setting(False, 'Random horizontal flip (p = 0.5)')
    jitter: float = setting(0.0, 'Colour jitter strength: brightness, contrast and saturation '
                                 'factors drawn from [1 - jitter, 1 + jitter]')
    hue_jitter: float = setting(0.0, 'Hue shift drawn from [-hue_jitter, hue_jitter] turns (0.05 = +-18 deg)')
    blur_prob: float = setting(0.0, 'Probability of a Gaussian blur, sigma drawn from BLUR_SIGMA (output px)')
    noise_std: float = setting(0.0, 'Gaussian pixel noise, its std drawn from [0, noise_std] (0..255 scale)')


@dataclass
class Params:
    """One draw of the random parameters (shared by all frames of a sample)."""

    matrix: np.ndarray          # (2, 3) affine from source pixels to output pixels
    out_hw: tuple[int, int]
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0            # turns
    blur_sigma: float = 0.0     # output pixels; 0 = no blur
    noise_std: float = 0.0      # 0..255 scale; 0 = no noise
    noise_seed: int = 0         # one noise field per sample, the same on each of its frames

    def changes_colour(self) -> bool:
        return (self.brightness, self.contrast, self.saturation) != (1.0, 1.0, 1.0) or bool(
            self.hue or self.blur_sigma or self.noise_std)


BLUR_SIGMA = (0.1, 1.5)


def draw(cfg: AugmentConfig, in_hw: tuple[int, int], rng: np.random.Generator,
         train: bool = True) -> Params:
    """Random parameters for a frame of size ``in_hw``; ``train=False`` gives the deterministic ones."""
    h, w = in_hw
    base = cfg.resize_scale * (max(cfg.cover_hw[0] / h, cfg.cover_hw[1] / w) if cfg.cover_hw else 1.0)
    s = base
    if train and cfg.scale_range and cfg.scale_range[0] != cfg.scale_range[1]:
        lo, hi = cfg.scale_range
        s *= math.exp(rng.uniform(math.log(lo), math.log(hi)))
    elif train and cfg.scale_range:
        s *= cfg.scale_range[0]
    sh, sw = int(round(h * s)), int(round(w * s))
    out_h, out_w = cfg.crop_hw if cfg.crop_hw else (int(round(h * base)), int(round(w * base)))
    # Offset of the crop inside the scaled frame; negative when the crop is larger (padding).
    if train:
        oy = rng.integers(0, sh - out_h + 1) if sh >= out_h else -rng.integers(0, out_h - sh + 1)
        ox = rng.integers(0, sw - out_w + 1) if sw >= out_w else -rng.integers(0, out_w - sw + 1)
    else:
        oy, ox = (sh - out_h) // 2, (sw - out_w) // 2
    sy, sx = sh / h, sw / w
    m = np.array([[sx, 0.0, -ox], [0.0, sy, -oy]], np.float64)
    if train and cfg.hflip and rng.random() < 0.5:
        m = np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    p = Params(m, (int(out_h), int(out_w)))
    if train and cfg.jitter > 0:
        j = cfg.jitter
        p.brightness, p.contrast, p.saturation = (float(rng.uniform(1 - j, 1 + j)) for _ in range(3))
    if train and cfg.hue_jitter > 0:
        p.hue = float(rng.uniform(-cfg.hue_jitter, cfg.hue_jitter))
    if train and cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
        p.blur_sigma = float(rng.uniform(*BLUR_SIGMA))
    if train and cfg.noise_std > 0:
        p.noise_std, p.noise_seed = float(rng.uniform(0, cfg.noise_std)), int(rng.integers(2**31))
    return p


def compose(extra: np.ndarray, p: Params) -> Params:
    """Params whose map first applies ``extra`` (2x3, source -> source) and then ``p``."""
    m = np.vstack([p.matrix, [0, 0, 1]]) @ np.vstack([extra, [0, 0, 1]])
    return replace(p, matrix=m[:2])


def apply_image(rgb: np.ndarray, p: Params) -> np.ndarray:
    """(H, W, 3) uint8 -> augmented (h, w, 3) uint8."""
    h, w = p.out_hw
    out = _warp(rgb, p, cv2.INTER_LINEAR, 0)
    if p.changes_colour():
        out = photometric(out, p)
    assert out.shape[:2] == (h, w)
    return out


def photometric(rgb: np.ndarray, p: Params) -> np.ndarray:
    """Brightness, contrast, saturation, hue, blur and noise of ``p`` on an (h, w, 3) uint8 frame."""
    out = rgb
    if (p.brightness, p.contrast, p.saturation) != (1.0, 1.0, 1.0):
        f = rgb.astype(np.float32)
        f *= p.brightness
        mean = f.mean()
        f = (f - mean) * p.contrast + mean
        gray = f.mean(axis=2, keepdims=True)
        f = (f - gray) * p.saturation + gray
        out = np.clip(f, 0, 255).astype(np.uint8)
    if p.hue:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)       # hue 0..255 = one turn
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(p.hue * 256))) % 256
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    if p.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), p.blur_sigma)
    if p.noise_std > 0:
        noise = np.random.default_rng(p.noise_seed).standard_normal(out.shape, np.float32) * p.noise_std
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    return out


def apply_label(label: np.ndarray, p: Params, ignore_index: int) -> np.ndarray:
    """(H, W) uint8 class ids -> (h, w), nearest sampling, outside pixels = ``ignore_index``."""
    return _warp(label, p, cv2.INTER_NEAREST, ignore_index)


def _warp(arr: np.ndarray, p: Params, interp: int, border: int) -> np.ndarray:
    h, w = p.out_hw
    m = p.matrix
    # Pure crop at scale 1 without flip: slice instead of resampling (exact and faster).
    if np.allclose(m[:, :2], np.eye(2)) and np.allclose(m[:, 2], np.round(m[:, 2])):
        ox, oy = -int(round(m[0, 2])), -int(round(m[1, 2]))
        if 0 <= oy and 0 <= ox and oy + h <= arr.shape[0] and ox + w <= arr.shape[1]:
            return np.ascontiguousarray(arr[oy:oy + h, ox:ox + w])
    # Downscaling with INTER_LINEAR aliases; INTER_AREA first when shrinking by more than 2x.
    if interp == cv2.INTER_LINEAR and abs(np.linalg.det(m[:, :2])) < 0.25:
        interp = cv2.INTER_AREA if _axis_aligned(m) else interp
        if interp == cv2.INTER_AREA:
            sx, sy = abs(m[0, 0]), abs(m[1, 1])
            small = cv2.resize(arr, None, fx=sx, fy=sy, interpolation=cv2.INTER_AREA)
            # small pixel i is the mean of source pixels centred at (i + 0.5) / s - 0.5 (cv2.resize), not at i / s
            # as ``m`` (and the label's nearest warp) takes it: without the half-pixel term the image sat up to
            # 0.4 output px off its label (an edge 0.75 px from the label's at scale 0.25)
            fix = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
            m = (np.vstack([m, [0, 0, 1]]) @ fix)[:2]
            arr, interp = small, cv2.INTER_LINEAR
    val = (border,) * (arr.shape[2] if arr.ndim == 3 else 1)
    return cv2.warpAffine(arr, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=val if arr.ndim == 3 else border)


def _axis_aligned(m: np.ndarray) -> bool:
    return abs(m[0, 1]) < 1e-9 and abs(m[1, 0]) < 1e-9


def synthetic_motion(in_hw: tuple[int, int], distance: int, rng: np.random.Generator,
                     shift_px_per_frame: float = 2.0, scale_per_frame: float = 0.005,
                     rotate_deg_per_frame: float = 0.1) -> np.ndarray:
    """A random (2, 3) affine standing in for ``distance`` frames of camera motion.

    Used to build a key frame from a single labelled frame when the video between labelled frames
    is not available (CamVid train is labelled at 1 Hz without the raw frames in between).
    """
    h, w = in_hw
    d = max(1, int(distance))
    angle = rng.uniform(-1, 1) * rotate_deg_per_frame * d
    scale = 1.0 + rng.uniform(-1, 1) * scale_per_frame * d
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    m[:, 2] += rng.uniform(-1, 1, size=2) * shift_px_per_frame * d
    return m
