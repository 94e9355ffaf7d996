"""Staged CNN encoders producing C2..C5 (strides 4, 8, 16, 32).

Each encoder has a ``stem`` and four ``stages`` so callers can run them piecewise (the key-frame FPN
runs the first stages every frame and the last ones only on key frames), and reports its
``out_channels`` and ``strides`` so decoders size themselves from it.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from vidseg_ros.models.blocks import conv_bn_relu, make_stage

log = logging.getLogger(__name__)

# ResNet-like presets: stem type, widths of C2..C5, blocks per stage.
# 'light' moves the cost into C4/C5: a 2-conv 3x3 stem, no extra block at 1/4 and one at 1/8, but
# wide C4/C5, so a key-frame model that caches C4/C5 saves most of the work on current frames.
RESNET_PRESETS: dict[str, dict] = {
    'light': {'stem': 'light', 'widths': (32, 64, 192, 256), 'depths': (0, 1, 2, 2)},
    'resnet18': {'stem': 'deep7', 'widths': (64, 128, 256, 512), 'depths': (2, 2, 2, 2)},
    'resnet34': {'stem': 'deep7', 'widths': (64, 128, 256, 512), 'depths': (3, 4, 6, 3)},
}
DENSENET_PRESETS: dict[str, dict] = {
    'densenet121': {'growth': 32, 'blocks': (6, 12, 24, 16), 'init_ch': 64},
}
BACKBONES = tuple(RESNET_PRESETS) + tuple(DENSENET_PRESETS)


class _StagedEncoder(nn.Module):
    """A stem then four stages (strides 4, 8, 16, 32); returns the output of every stage (C2..C5)."""

    strides = (4, 8, 16, 32)
    out_channels: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def truncate(self, levels: int) -> None:
        """Keep the first ``levels`` stages; ``out_channels`` and ``strides`` report only those
        (weight names are unchanged, so checkpoints of the truncated model still load)."""
        self.stages = self.stages[:levels]
        self.out_channels = tuple(self.out_channels[:levels])
        self.strides = tuple(self.strides[:levels])


class ResNetEncoder(_StagedEncoder):
    """ResNet-style encoder (ResNet-18/34 or the light key-frame preset), trained from scratch.

    Args:
        stem: 'deep7' (7x7/2 conv + max-pool, torchvision layout) or 'light' (two 3x3/2 convs).
        widths: Channels of C2..C5.
        depths: Blocks per stage (C2 may have 0: the stem output is C2).
        block: Block registry key ('resnet', 'vanilla', 'convnext').
        in_ch: Input channels.
    """

    def __init__(self, stem: str = 'light', widths=(32, 64, 192, 256), depths=(0, 1, 2, 2),
                 block: str = 'resnet', in_ch: int = 3):
        super().__init__()
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f'widths and depths need 4 entries (C2..C5), got {widths} / {depths}')
        if stem == 'deep7':
            stem_ch = widths[0]
            self.stem = nn.Sequential(
                nn.Conv2d(in_ch, stem_ch, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_ch),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        elif stem == 'light':
            stem_ch = widths[0]
            # thin 1/2-resolution layer: at full size it is memory-bound and runs on every frame
            mid = max(stem_ch // 4, 8)
            self.stem = nn.Sequential(conv_bn_relu(in_ch, mid, 3, 2), conv_bn_relu(mid, stem_ch, 3, 2))
        else:
            raise ValueError(f"unknown stem {stem!r}; valid stems: 'deep7', 'light'")
        chans = [stem_ch] + widths
        self.stages = nn.ModuleList(
            make_stage(block, chans[i], chans[i + 1], depths[i], 1 if i == 0 else 2) for i in range(4))
        self.out_channels = tuple(widths)


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 (bottleneck) then BN-ReLU-3x3 producing ``growth`` new channels."""

    def __init__(self, in_ch: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), nn.Conv2d(in_ch, bn_size * growth, 1, bias=False),
            nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True),
            nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class DenseNetEncoder(_StagedEncoder):
    """DenseNet-121-like encoder (dense blocks + compressing transitions), trained from scratch.

    Args:
        growth: Channels each dense layer adds.
        blocks: Dense layers in the four blocks (C2..C5).
        init_ch: Stem channels.
        in_ch: Input channels.
    """

    def __init__(self, growth: int = 32, blocks=(6, 12, 24, 16), init_ch: int = 64, in_ch: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, init_ch, 7, 2, 3, bias=False), nn.BatchNorm2d(init_ch),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        ch, stages, outs = init_ch, [], []
        for i, n in enumerate(blocks):
            layers: list[nn.Module] = []
            if i > 0:  # transition: BN-ReLU-1x1 halving channels, then 2x2 average pool
                layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                           nn.Conv2d(ch, ch // 2, 1, bias=False), nn.AvgPool2d(2)]
                ch //= 2
            for _ in range(int(n)):
                layers.append(_DenseLayer(ch, growth))
                ch += growth
            # DenseNet keeps features pre-activation; add BN-ReLU so each level is a usable output
            layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=False)]
            stages.append(nn.Sequential(*layers))
            outs.append(ch)
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(outs)


class TimmEncoder(_StagedEncoder):
    """ImageNet-pretrained encoder from timm, only when timm is installed and the user asks.

    timm downloads (or reads from its cache) the weights; this package never does so by itself.
    """

    def __init__(self, name: str):
        super().__init__()
        try:
            import timm  # optional dependency, imported only on request
        except ImportError as e:
            raise ImportError('pretrained=True needs timm (pip install timm); the default is to train '
                              'from scratch with pretrained=False') from e
        net = timm.create_model(name, pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))
        self.out_channels = tuple(net.feature_info.channels())
        self.strides = tuple(net.feature_info.reduction())
        # timm's FeatureListNet is an ordered ModuleDict; cut it after each returned layer so the
        # stages can run piecewise like ours (key-frame caching needs that)
        stages, current = [], []
        for key, module in net.items():
            current.append(module)
            if key in net.return_layers:
                stages.append(nn.Sequential(*current))
                current = []
        self.stem = nn.Identity()
        self.stages = nn.ModuleList(stages)
        log.info('encoder %s: ImageNet weights from timm', name)


def create_encoder(backbone: str = 'light', block: str = 'resnet', width_mult: float = 1.0,
                   pretrained: bool = False, in_ch: int = 3) -> nn.Module:
    """Encoder for a backbone preset name.

    Args:
        backbone: One of ``BACKBONES`` ('light', 'resnet18', 'resnet34', 'densenet121').
        block: Block type for ResNet-like presets.
        width_mult: Scales every width (growth rate for DenseNet), e.g. 0.5 for CPU training.
        pretrained: Use timm's ImageNet weights (needs timm; only for the standard backbones).
        in_ch: Input channels.
    """
    if pretrained:
        if backbone == 'light' or width_mult != 1.0 or block != 'resnet':
            raise ValueError('pretrained=True only applies to resnet18/resnet34/densenet121 with '
                             'block=resnet and width_mult=1')
        return TimmEncoder(backbone)
    if backbone in RESNET_PRESETS:
        p = RESNET_PRESETS[backbone]
        widths = [max(8, int(round(w * width_mult))) for w in p['widths']]
        return ResNetEncoder(p['stem'], widths, p['depths'], block, in_ch)
    if backbone in DENSENET_PRESETS:
        p = DENSENET_PRESETS[backbone]
        return DenseNetEncoder(max(4, int(round(p['growth'] * width_mult))), p['blocks'],
                               max(8, int(round(p['init_ch'] * width_mult))), in_ch)
    raise ValueError(f'unknown backbone {backbone!r}; valid backbones: {", ".join(BACKBONES)}')
