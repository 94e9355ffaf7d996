"""Recurrent UNet: a UNet whose encoder outputs pass through convolutional temporal cells.

After the Bonn lab report on video segmentation: each encoder level's output goes through a cRNN or
cGRU cell (3x3 convs) before it is used as a skip connection (and at the bottleneck), so masks are
steadier over time. ``temporal_cell='none'`` is the per-frame twin with the same layers otherwise.

Streaming state is data (``models.contract.RecurrentModel``): ``step(frame, state) -> (logits, state)``
with ``state`` a flat tuple of hidden tensors (one per cell level), and ``forward`` on a clip
(B, T, C, H, W) equals T steps. Without cells the model reports kind 'frame'.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidseg_ros.models.blocks import get_block
from vidseg_ros.models.contract import RecurrentModel
from vidseg_ros.models.temporal_cells import CELLS, TEMPORAL_CELLS, ResidualCell

# Encoder widths per level; the last entry is the bottleneck (levels = number of downsamplings).
SIZES: dict[str, tuple[int, ...]] = {
    'original': (64, 128, 256, 512),
    'small_shallow': (16, 32, 64, 128),
    'small_deep': (16, 32, 64, 128, 256),
}


class RecurrentUNet(RecurrentModel):
    """UNet with temporal cells on the skip path.

    Args:
        num_classes: Output classes.
        size: 'original' (64-512 ch, 3 levels), 'small_shallow' (16-128, 3), 'small_deep' (16-256, 4).
        block: Encoder/decoder block ('vanilla', 'resnet', 'convnext').
        temporal_cell: 'cgru', 'crnn' or 'none' (the per-frame twin).
        temporal_levels: Cells on the deepest N levels only (0 = every level, the report's design);
            the full-resolution cells cost the most, so 2-3 deep levels make a cheaper variant.
        residual_cells: Each cell's output is added to its input through a zero-initialised 1x1
            conv (``ResidualCell``) instead of replacing it; default False is the report's design.
        in_ch: Input channels.
    """

    output_stride = 1

    def __init__(self, num_classes: int = 11, size: str = 'small_deep', block: str = 'resnet',
                 temporal_cell: str = 'cgru', temporal_levels: int = 0, residual_cells: bool = False,
                 in_ch: int = 3):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f'unknown size {size!r}; valid sizes: {", ".join(SIZES)}')
        if temporal_cell not in TEMPORAL_CELLS:
            raise ValueError(f'unknown temporal_cell {temporal_cell!r}; valid: {", ".join(TEMPORAL_CELLS)}')
        widths = SIZES[size]
        blk = get_block(block)
        self.widths, self.temporal_cell, self.num_classes = widths, temporal_cell, num_classes
        self.stride = 2 ** (len(widths) - 1)
        # vanilla/resnet enter with a 3x3 conv; ConvNeXt's 7x7 depthwise needs a channel stem first
        self.stem = nn.Conv2d(in_ch, widths[0], 3, 1, 1) if block == 'convnext' else nn.Identity()
        first_in = widths[0] if block == 'convnext' else in_ch
        self.down = nn.ModuleList(
            [blk(first_in, widths[0], 1)] + [blk(widths[i - 1], widths[i], 2) for i in range(1, len(widths))])
        n_cells = 0 if temporal_cell == 'none' else (temporal_levels or len(widths))
        if not 0 <= n_cells <= len(widths):
            raise ValueError(f'temporal_levels must be 0..{len(widths)} for size {size!r}, got {temporal_levels}')
        # levels that carry state (deepest first dropped last); state[i] belongs to cell_levels[i]
        self.cell_levels = tuple(range(len(widths) - n_cells, len(widths)))
        self.cells = nn.ModuleList(CELLS[temporal_cell](widths[i]) for i in self.cell_levels) if n_cells \
            else nn.ModuleList()
        if residual_cells:
            self.cells = nn.ModuleList(ResidualCell(c, widths[i]) for c, i in zip(self.cells, self.cell_levels))
        self.residual_cells = bool(residual_cells and n_cells)
        self.up_proj = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(widths) - 1))
        self.up = nn.ModuleList(blk(2 * widths[i], widths[i], 1) for i in range(len(widths) - 1))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def kind(self) -> str:
        """'recurrent' with temporal cells; without, the per-frame twin."""
        return 'recurrent' if len(self.cells) else 'frame'

    def state_layout(self) -> list[tuple[int, int]]:
        """(channels, downsampling factor) of each state tensor, for exported models."""
        return [(self.widths[i], 2 ** i) for i in self.cell_levels]

    def advance(self, frame: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame (B, C, H, W) and the previous state -> logits (B, K, H, W) and the new state."""
        feats, new_state, x = [], [], self.stem(frame)
        first = self.cell_levels[0] if self.cell_levels else len(self.down)
        for i, down in enumerate(self.down):
            x = down(x)
            if i >= first:
                if self.residual_cells:
                    x, h = self.cells[i - first](x, state[i - first])
                else:
                    x = h = self.cells[i - first](x, state[i - first])
                new_state.append(h)
            feats.append(x)
        new_state = tuple(new_state)
        x = feats[-1]
        for i in reversed(range(len(self.up))):
            skip = feats[i]
            x = F.interpolate(self.up_proj[i](x), size=skip.shape[-2:], mode='bilinear', align_corners=False)
            x = self.up[i](torch.cat([x, skip], 1))
        return self.classifier(x), new_state
