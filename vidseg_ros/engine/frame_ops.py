"""Per-frame tensor work around the model: upload, resize + normalise, and logits -> labels on the device.

The same torch code runs on any device (tests run it on CPU); on CUDA the frame goes up as uint8 from a
pinned host buffer and only uint8 images come back. The CPU engine uses OpenCV for the resize and
``engine.upsample`` for the labels instead, which are faster there.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from vidseg_ros.engine.resize import resize_image


class InputBuffer:
    """Preallocated, zero-padded network input (1, 3, Hn, Wn) float32 and, on CUDA, a pinned staging
    buffer for the uint8 frame; both are reused while the sizes stay the same."""

    def __init__(self, device: torch.device, mean: list[float], std: list[float]):
        self.device = device
        self.scale = (1.0 / (torch.tensor(std, device=device) * 255.0)).view(3, 1, 1)
        self.offset = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(3, 1, 1)
        self._net: torch.Tensor | None = None
        self._filled_hw: tuple[int, int] | None = None   # the part of _net the last frame wrote
        self._pinned: torch.Tensor | None = None
        self._frame: torch.Tensor | None = None

    def net(self, net_hw, resized_hw=None) -> torch.Tensor:
        """The network input tensor for ``net_hw``; its padding stays 0 (the mean colour): cleared when
        a frame of another resized size is about to fill it (the same padded size can hold both)."""
        shape = (1, 3, int(net_hw[0]), int(net_hw[1]))
        if self._net is None or tuple(self._net.shape) != shape:
            self._net = torch.zeros(shape, device=self.device)
        elif resized_hw is not None and tuple(resized_hw) != self._filled_hw:
            self._net.zero_()
        if resized_hw is not None:
            self._filled_hw = tuple(resized_hw)
        return self._net

    def upload(self, image_rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> the same on the device: pinned host copy, then an asynchronous copy."""
        if self.device.type == 'cpu':
            return torch.from_numpy(_writable(image_rgb))
        if self._pinned is None or tuple(self._pinned.shape) != image_rgb.shape:
            self._pinned = torch.empty(image_rgb.shape, dtype=torch.uint8).pin_memory()
            self._frame = torch.empty(image_rgb.shape, dtype=torch.uint8, device=self.device)
        self._pinned.numpy()[...] = image_rgb
        self._frame.copy_(self._pinned, non_blocking=True)
        return self._frame

    def fill(self, frame: torch.Tensor, resized_hw, net_hw) -> torch.Tensor:
        """uint8 (H, W, 3) frame on the device -> normalised network input: resize (area-like
        antialiased bilinear along a shrinking axis) and normalise in place into the padded buffer."""
        rh, rw = int(resized_hw[0]), int(resized_hw[1])
        x = self.net(net_hw, (rh, rw))
        src = frame.permute(2, 0, 1)
        if tuple(src.shape[-2:]) != (rh, rw):
            # per axis: antialiasing leaves a growing axis plain bilinear, and a frame that shrinks along one axis
            # and grows along the other has to be filtered along the first (judged by area, it was not)
            shrink = rh < src.shape[-2] or rw < src.shape[-1]
            src = F.interpolate(src[None].float(), size=(rh, rw), mode='bilinear', align_corners=False,
                                antialias=shrink)[0]
        view = x[0, :, :rh, :rw]
        view.copy_(src).mul_(self.scale).add_(self.offset)
        return x

    def fill_cpu(self, image_rgb: np.ndarray, resized_hw, net_hw) -> torch.Tensor:
        """CPU: OpenCV resize of the uint8 frame (``resize.resize_image``), then the same normalise."""
        rh, rw = int(resized_hw[0]), int(resized_hw[1])
        image_rgb = resize_image(image_rgb, rh, rw)
        x = self.net(net_hw, (rh, rw))
        x[0, :, :rh, :rw].copy_(torch.from_numpy(_writable(image_rgb)).permute(2, 0, 1)) \
            .mul_(self.scale).add_(self.offset)
        return x


def _writable(image: np.ndarray) -> np.ndarray:
    """A C-contiguous array torch can wrap: a read-only one (``np.frombuffer`` of bytes, a frozen frame) is
    copied, as torch.from_numpy warns about undefined behaviour for those even when only read."""
    return np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order='C')


def logits_to_outputs(logits: torch.Tensor, net_hw, valid_hw, out_hw, want_confidence: bool,
                      class_prob: int | None, confidence_u8: bool):
    """(1, C, h, w) logits on any device -> (ids uint8, confidence, class probability) at ``out_hw``,
    on the same device: bilinear-resample the image's part of the logits, argmax and softmax there."""
    logits = logits.float()
    if tuple(valid_hw) != tuple(net_hw):  # padded: sample the image's part of the logits, in one step
        grid = _crop_grid(tuple(logits.shape[-2:]), tuple(valid_hw), tuple(net_hw), tuple(out_hw), logits.device)
        logits = F.grid_sample(logits, grid, mode='bilinear', padding_mode='border', align_corners=False)
    elif tuple(logits.shape[-2:]) != tuple(out_hw):
        logits = F.interpolate(logits, size=tuple(out_hw), mode='bilinear', align_corners=False)
    logits = logits[0]
    ids = logits.argmax(0).to(torch.uint8)
    conf = prob = None
    if want_confidence or class_prob is not None:
        p = torch.softmax(logits, 0)
        if want_confidence:
            conf = p.max(0).values
            conf = prob_to_u8(conf) if confidence_u8 else conf
        if class_prob is not None:
            prob = p[class_prob]
    return ids, conf, prob


@functools.lru_cache(maxsize=8)   # one per geometry and device: built once, not per frame
def _crop_grid(low_hw, valid_hw, net_hw, out_hw, device) -> torch.Tensor:
    """(1, H, W, 2) grid_sample coordinates of each output pixel in logits covering ``net_hw``, of which the
    image is the top-left ``valid_hw``: the sampling of ``upsample._axis`` (half-pixel centres, clamped), so
    the device's masks equal the CPU's. Resizing to the network size, cropping and resizing again (two
    bilinear steps) agreed with them on only 81 % of pixels for a 3x2 frame shown at 11x200."""
    axes = []
    for n_out, n_valid, n_low, n_net in zip(out_hw, valid_hw, low_hw, net_hw):
        s = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_valid / n_out) * (n_low / n_net)
             - 0.5).clamp_(0, n_low - 1)
        axes.append(((2 * s + 1) / n_low - 1).float())   # align_corners=False normalisation
    y, x = axes
    return torch.stack((x[None, :].expand(len(y), -1), y[:, None].expand(-1, len(x))), -1)[None]


def prob_to_u8(p: torch.Tensor) -> torch.Tensor:
    """Probability in [0, 1] -> uint8 0..255, rounded (the mono8 confidence encoding)."""
    return (p * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
