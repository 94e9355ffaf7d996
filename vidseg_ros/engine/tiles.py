"""Overlapping-tile inference for inputs too big for memory.

Generalises the one-shot VOS paper's scheme (224-pixel tiles at a fixed stride, overlaps merged):
tiles of ``tile_size`` network pixels every ``tile_stride`` pixels, the last tile flush with the
border, and logits blended with weights that ramp down across each overlap so tile borders (where
the receptive field is cut) count least.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def effective_tile(tile_size: int, stride: int) -> int:
    """The tile side actually used: ``tile_size`` rounded up to a multiple of the model ``stride``."""
    return -(-tile_size // stride) * stride


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


@dataclass
class TileGrid:
    """Tiles ``(y0, x0, h, w)`` covering an input of ``hw`` network pixels."""

    hw: tuple[int, int]
    tiles: list[tuple[int, int, int, int]]
    overlap: int

    @classmethod
    def for_input(cls, hw, tile_size: int, tile_stride: int, stride: int) -> 'TileGrid':
        """Grid for an (H, W) input; one whole-image tile when tiling is off or not needed.

        ``tile_size`` is rounded up and ``tile_stride`` down to multiples of the model ``stride``
        so every tile is a valid input and tile logits land on the output grid exactly.
        """
        h, w = int(hw[0]), int(hw[1])
        if tile_size <= 0 or (h <= tile_size and w <= tile_size):
            return cls((h, w), [(0, 0, h, w)], 0)
        tile = effective_tile(tile_size, stride)
        step = tile_stride if tile_stride > 0 else tile * 3 // 4
        step = max(stride, step // stride * stride)
        step = min(step, tile)
        tiles = [(y, x, min(tile, h), min(tile, w)) for y in _starts(h, tile, step) for x in _starts(w, tile, step)]
        return cls((h, w), tiles, tile - step)

    def __len__(self) -> int:
        return len(self.tiles)

    def blend(self, outs: list[torch.Tensor], output_stride: int) -> torch.Tensor:
        """Weighted average of per-tile logits (B, K, h/os, w/os) into (B, K, H/os, W/os)."""
        os_ = output_stride
        b, k = outs[0].shape[:2]
        full = outs[0].new_zeros(b, k, self.hw[0] // os_, self.hw[1] // os_)
        weight = outs[0].new_zeros(1, 1, self.hw[0] // os_, self.hw[1] // os_)
        ramp = max(1.0, self.overlap / os_)
        for (y0, x0, th, tw), out in zip(self.tiles, outs):
            oh, ow = out.shape[-2:]
            wy = self._window(oh, ramp, out)
            wx = self._window(ow, ramp, out)
            win = (wy[:, None] * wx[None, :])[None, None]
            ys, xs = y0 // os_, x0 // os_
            full[..., ys:ys + oh, xs:xs + ow] += out * win
            weight[..., ys:ys + oh, xs:xs + ow] += win
        return full / weight

    @staticmethod
    def _window(n: int, ramp: float, like: torch.Tensor) -> torch.Tensor:
        """1-D weights: linear ramp over ``ramp`` samples at both ends, flat in the middle, > 0."""
        i = torch.arange(n, dtype=like.dtype, device=like.device)
        return (torch.minimum(i + 0.5, n - i - 0.5) / ramp).clamp(1e-3, 1.0)
