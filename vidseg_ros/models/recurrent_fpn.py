"""Recurrent FPN: the per-frame FPN with one temporal cell on its decoder's 1/8 path.

The recurrent UNet carries full-width state on its skips, which made it about 5x slower than the FPN
(camvid_unet_cgru vs camvid_fpn) and 17 mIoU less accurate (issue #16). Here the cell sits where it is
cheap and where the whole pyramid has already been merged: on the projected 1/8 feature that feeds the
thin 1/4 level (``head_proj``'s output, ``p2_ch`` channels), so the state is one small tensor and the
encoder is the FPN's.

    low  = encode_low(x)                     C2..C5, every frame (nothing cached)
    top  = head_proj(merge(low))             the merged pyramid at 1/8, p2_ch channels
    top, h = cell(top, h)                    residual: top + C_o * h, C_o zero-initialised
    out  = head(low, top)                    P2 + classifier -> logits at 1/4

The layers carry the per-frame FPN's parameter names, so ``init_from`` a ``keyframe_fpn``
checkpoint (e.g. ``camvid_fpn``) transfers every tensor but the cell's, and the zero-initialised
output conv makes the warm-started model equal its twin exactly until the cell has learnt something.
``temporal_cell='none'`` is that twin (kind 'frame').
"""
from __future__ import annotations

import torch

from vidseg_ros.models.contract import RecurrentModel
from vidseg_ros.models.keyframe_fpn import FPNLayers
from vidseg_ros.models.temporal_cells import CELLS, TEMPORAL_CELLS, ResidualCell


class RecurrentFPN(FPNLayers, RecurrentModel):
    """FPN segmentation with a residual cGRU/cRNN on the merged 1/8 path.

    Args:
        num_classes: Output classes.
        backbone, block, width_mult, fpn_ch, p2_ch, separable_p3, pretrained, in_ch: as ``KeyframeFPN``.
        temporal_cell: 'cgru', 'crnn' or 'none' (the per-frame twin, kind 'frame').
        cell_kernel: the cell's convolution size: 3, or 1 (per pixel: the cell costs about a ninth).
    """

    output_stride = 4

    def __init__(self, num_classes: int = 11, backbone: str = 'light', block: str = 'resnet',
                 width_mult: float = 1.0, fpn_ch: int = 64, p2_ch: int = 16, separable_p3: bool = True,
                 temporal_cell: str = 'cgru', cell_kernel: int = 3, pretrained: bool = False, in_ch: int = 3):
        super().__init__()
        if temporal_cell not in TEMPORAL_CELLS:
            raise ValueError(f'unknown temporal_cell {temporal_cell!r}; valid: {", ".join(TEMPORAL_CELLS)}')
        self._build_fpn(num_classes, backbone, block, width_mult, fpn_ch, p2_ch, 4, separable_p3,
                        pretrained, in_ch)
        self.temporal_cell, self.p2_ch = temporal_cell, p2_ch
        self.state_stride = int(self.encoder.strides[1])    # the merge level (1/8)
        self.cell = (ResidualCell(CELLS[temporal_cell](p2_ch, cell_kernel), p2_ch) if temporal_cell != 'none'
                     else None)

    @property
    def kind(self) -> str:
        """'recurrent' with a cell; without, the per-frame FPN."""
        return 'recurrent' if self.cell is not None else 'frame'

    def state_layout(self) -> list[tuple[int, int]]:
        """One state tensor: ``p2_ch`` channels at 1/8."""
        return [(self.p2_ch, self.state_stride)] if self.cell is not None else []

    def advance(self, frame: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame (B, C, H, W) and the previous state -> logits at 1/4 and the new state."""
        low = self.encode_low(frame)
        top = self.head_proj(self.merge(low))
        if self.cell is None:
            return self.head(low, top), ()
        top, h = self.cell(top, state[0])
        return self.head(low, top), (h,)
