"""Key-frame FPN: a feature pyramid network whose top levels are computed on key frames only.

After "semi-supervised feature sharing for efficient video segmentation": the deep, slowly changing
features (C4/C5 and their pyramid levels) are computed on a key frame and reused on the following
"current" frames, which only run the cheap shallow part and the decoder.

The model is split explicitly so the engine (and exported graphs) can cache::

    low  = encode_low(x)          # stem + C2..C(5-k), every frame          -> tuple of tensors
    high = encode_high(low)       # C(6-k)..C5 + their top-down levels, key frames only (cached)
    out  = decode(low, high)      # low pyramid levels + head, every frame -> logits at 1/4

with ``k = cached_levels``; ``models.contract.KeyframeModel`` derives ``forward``, ``forward_key``,
``forward_current`` and ``forward_step`` from the split. Without cached levels the model reports
kind 'frame' (the plain per-frame FPN) and the engine runs it whole on every frame.

Design for speed (the cached part must dominate the cost): the 'light' backbone has a two-conv 3x3
stem, no extra block at 1/4 and one block at 1/8, but wide C4/C5; pyramid levels P3..P5 are merged at
1/8 and the 1/4 path (P2) is thin (``p2_ch`` channels), so the per-frame part stays small.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidseg_ros.models.blocks import conv_bn_relu
from vidseg_ros.models.contract import KeyframeModel
from vidseg_ros.models.encoder import create_encoder


class FPNLayers:
    """The FPN's layers and the computation every frame runs; shared by ``KeyframeFPN`` and
    ``models.recurrent_fpn.RecurrentFPN`` (same parameter names, so weights move between them)."""

    def _build_fpn(self, num_classes: int, backbone: str, block: str, width_mult: float, fpn_ch: int,
                   p2_ch: int, levels: int, separable_p3: bool, pretrained: bool, in_ch: int) -> None:
        self.encoder = create_encoder(backbone, block, width_mult, pretrained, in_ch)
        self.encoder.truncate(levels)  # the truncated FPN drops the top stages
        chans = self.encoder.out_channels
        self.levels, self.n_low = levels, levels
        self.stride = int(self.encoder.strides[-1])
        self.num_classes = num_classes
        widths = [p2_ch] + [fpn_ch] * (levels - 1)
        self.laterals = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(chans, widths))
        self.outputs = nn.ModuleList(conv_bn_relu(w, w, 3) for w in widths)
        if separable_p3:  # P3 runs on every frame at 1/8: a full 3x3 there would dominate decode
            self.outputs[1] = nn.Sequential(nn.Conv2d(fpn_ch, fpn_ch, 3, 1, 1, groups=fpn_ch, bias=False),
                                            conv_bn_relu(fpn_ch, fpn_ch, 1))
        # merged P3..P5 (at 1/8) -> top-down input of the thin 1/4 level P2
        self.head_proj = nn.Conv2d(fpn_ch, p2_ch, 1)
        self.classifier = nn.Conv2d(p2_ch, num_classes, 1)

    def encode_low(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stem and the first ``n_low`` stages: (C2, C3[, C4[, C5]]), run on every frame."""
        feats, x = [], self.encoder.stem(x)
        for stage in self.encoder.stages[:self.n_low]:
            x = stage(x)
            feats.append(x)
        return tuple(feats)

    def merge(self, low: tuple[torch.Tensor, ...], high: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """The low pyramid levels' top-down pass, summed at 1/8 with the cached ``high`` levels."""
        t = high[0] if len(high) else None
        merged = high[1] if len(high) else None
        size8 = low[1].shape[-2:]
        for i in reversed(range(1, self.n_low)):
            lat = self.laterals[i](low[i])
            t = lat if t is None else lat + F.interpolate(t, size=lat.shape[-2:], mode='nearest')
            p = self.outputs[i](t)
            if i > 1:
                p = F.interpolate(p, size=size8, mode='bilinear', align_corners=False)
            merged = p if merged is None else merged + p
        return merged

    def head(self, low: tuple[torch.Tensor, ...], top: torch.Tensor) -> torch.Tensor:
        """The thin 1/4 level P2 (lateral + ``top``, the projected merge at 1/8), one 3x3, classifier."""
        lat2 = self.laterals[0](low[0])
        top = F.interpolate(top, size=lat2.shape[-2:], mode='bilinear', align_corners=False)
        return self.classifier(self.outputs[0](lat2 + top))


class KeyframeFPN(FPNLayers, KeyframeModel):
    """FPN semantic segmentation with cacheable top pyramid levels.

    Args:
        num_classes: Output classes.
        backbone: Encoder preset ('light', 'resnet18', 'resnet34', 'densenet121').
        block: Encoder block type ('resnet', 'vanilla', 'convnext').
        width_mult: Scales the encoder widths.
        fpn_ch: Channels of pyramid levels P3..P5.
        p2_ch: Channels of the 1/4 path (P2 and the head), kept small for speed.
        separable_p3: Depthwise-separable 3x3 output conv for P3 (computed on every frame).
        cached_levels: Top pyramid levels computed on key frames only (0 = plain per-frame FPN).
        levels: Pyramid levels the model has (4 = C2..C5; fewer = the truncated FPN baseline).
        pretrained: ImageNet encoder weights from timm (never downloaded unless asked).
        in_ch: Input channels.
    """

    output_stride = 4

    def __init__(self, num_classes: int = 11, backbone: str = 'light', block: str = 'resnet',
                 width_mult: float = 1.0, fpn_ch: int = 64, p2_ch: int = 16, cached_levels: int = 2,
                 levels: int = 4, separable_p3: bool = True, pretrained: bool = False, in_ch: int = 3):
        super().__init__()
        if not 2 <= levels <= 4:
            raise ValueError(f'levels must be 2..4, got {levels}')
        if not 0 <= cached_levels <= min(2, levels - 2):
            raise ValueError(f'cached_levels must be 0..{min(2, levels - 2)} for {levels} levels, '
                             f'got {cached_levels}')
        self._build_fpn(num_classes, backbone, block, width_mult, fpn_ch, p2_ch, levels, separable_p3,
                        pretrained, in_ch)
        self.cached_levels, self.n_low = cached_levels, levels - cached_levels

    @property
    def kind(self) -> str:
        """'keyframe' with cached levels; without, the plain per-frame FPN."""
        return 'keyframe' if self.cached_levels else 'frame'

    @property
    def cache_tensors(self) -> int:
        """``encode_high`` returns ``(T_top, G)`` when anything is cached."""
        return 2 if self.cached_levels else 0

    def set_cached_levels(self, cached_levels: int) -> 'KeyframeFPN':
        """Move the key/current split; the weights do not depend on it, so a per-frame FPN
        checkpoint can run cached (and vice versa). Records the change in ``arch_config``."""
        if not 0 <= cached_levels <= min(2, self.levels - 2):
            raise ValueError(f'cached_levels must be 0..{min(2, self.levels - 2)}, got {cached_levels}')
        self.cached_levels, self.n_low = cached_levels, self.levels - cached_levels
        if isinstance(getattr(self, 'arch_config', None), dict):
            self.arch_config['cached_levels'] = cached_levels
        return self

    # -- the split (encode_low, merge and head come from FPNLayers) --------------------------
    def encode_high(self, low: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Top stages and their pyramid levels from ``low``: ``(T_top, G)`` or () if nothing cached.

        ``T_top`` is the top-down feature at the first cached level (feeds the low levels' top-down);
        ``G`` is the sum of the cached output levels already resized to 1/8, the decoder's merge size.
        """
        if self.cached_levels == 0:
            return ()
        x, feats = low[-1], []
        for stage in self.encoder.stages[self.n_low:]:
            x = stage(x)
            feats.append(x)
        t, merged = None, None
        size8 = low[1].shape[-2:]
        for j in reversed(range(len(feats))):
            i = self.n_low + j
            lat = self.laterals[i](feats[j])
            t = lat if t is None else lat + F.interpolate(t, size=lat.shape[-2:], mode='nearest')
            p = F.interpolate(self.outputs[i](t), size=size8, mode='bilinear', align_corners=False)
            merged = p if merged is None else merged + p
        return t, merged

    def decode(self, low: tuple[torch.Tensor, ...], high: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Low pyramid levels, merge at 1/8, thin 1/4 path and classifier: logits at 1/4 size."""
        return self.head(low, self.head_proj(self.merge(low, high)))


class TruncatedFPN(KeyframeFPN):
    """The speed baseline: the FPN with its top ``removed_levels`` levels (and stages) removed.

    Args:
        num_classes: Output classes.
        removed_levels: Top levels removed (1 drops C5/P5, 2 drops C4/C5 and P4/P5).
        **kw: Other ``KeyframeFPN`` arguments (backbone, block, widths, ...).
    """

    def __init__(self, num_classes: int = 11, removed_levels: int = 2, backbone: str = 'light',
                 block: str = 'resnet', width_mult: float = 1.0, fpn_ch: int = 64, p2_ch: int = 16,
                 separable_p3: bool = True, pretrained: bool = False, in_ch: int = 3):
        super().__init__(num_classes, backbone, block, width_mult, fpn_ch, p2_ch, cached_levels=0,
                         levels=4 - removed_levels, separable_p3=separable_p3, pretrained=pretrained,
                         in_ch=in_ch)
