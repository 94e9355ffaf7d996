"""Convolution blocks shared by the encoders and decoders: vanilla, ResNet and ConvNeXt.

Every block has the same signature ``Block(in_ch, out_ch, stride=1)`` so encoders and decoders can
swap block types without knowing which one they hold (``BLOCKS[name]``).
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias, BN follows) + BatchNorm + ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class VanillaBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, as in the original UNet.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the first conv (2 halves the resolution).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(in_ch, out_ch, 3, stride), conv_bn_relu(out_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResNetBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a 1x1 projection shortcut when the shape changes.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the first conv and of the shortcut.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(in_ch, out_ch, 3, stride)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of an (B, C, H, W) tensor; plain ops so it exports to ONNX."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, LayerNorm, 1x1 expand x4, GELU, 1x1 project, layer scale.

    A shape change (stride or channels) goes through a separate norm + strided conv first, as
    ConvNeXt's downsampling layers do, so the residual branch always keeps its shape.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Downsampling factor of the entry conv (1 or 2).
        layer_scale: Initial value of the per-channel residual scale.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, layer_scale: float = 1e-6):
        super().__init__()
        self.down = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            # kernel == stride: non-overlapping patch merging, as in ConvNeXt's downsample layers
            self.down = nn.Sequential(LayerNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, stride, stride))
        self.dwconv = nn.Conv2d(out_ch, out_ch, 7, 1, 3, groups=out_ch)
        self.norm = LayerNorm2d(out_ch)
        self.pw1 = nn.Conv2d(out_ch, 4 * out_ch, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(4 * out_ch, out_ch, 1)
        self.gamma = nn.Parameter(torch.full((out_ch,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        y = self.pw2(self.act(self.pw1(self.norm(self.dwconv(x)))))
        return x + y * self.gamma[:, None, None]


BLOCKS: dict[str, type[nn.Module]] = {
    'vanilla': VanillaBlock,
    'resnet': ResNetBlock,
    'convnext': ConvNeXtBlock,
}


def get_block(name: str) -> type[nn.Module]:
    """Block class for a registry key; unknown keys list the valid ones."""
    try:
        return BLOCKS[name]
    except KeyError:
        raise ValueError(f'unknown block {name!r}; valid blocks: {", ".join(sorted(BLOCKS))}') from None


def make_stage(block: str, in_ch: int, out_ch: int, depth: int, stride: int) -> nn.Sequential:
    """``depth`` blocks; the first changes stride/channels. depth 0 with a shape change = 1 block."""
    cls = get_block(block)
    if depth <= 0 and stride == 1 and in_ch == out_ch:
        return nn.Sequential()
    layers = [cls(in_ch, out_ch, stride)]
    layers += [cls(out_ch, out_ch, 1) for _ in range(depth - 1)]
    return nn.Sequential(*layers)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv equal to ``bn(conv(x))`` in eval mode (BN statistics folded into weight and bias)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.data = conv.weight.detach() * scale[:, None, None, None]
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data = (bias - bn.running_mean) * scale + bn.bias.detach()
    return fused.to(conv.weight.device, conv.weight.dtype)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every Conv2d directly followed by a BatchNorm2d into one conv, in place (inference only).

    Saves one full pass over each feature map per BN; outputs are unchanged up to rounding.
    Handles Sequential pairs and ResNetBlock's ``conv2``/``bn2``.
    """
    if model.training:
        raise RuntimeError('fuse_conv_bn is for inference: call model.eval() first')
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a], module._modules[b] = _fold(conv, bn), nn.Identity()
        elif isinstance(module, ResNetBlock) and isinstance(module.bn2, nn.BatchNorm2d):
            module.conv2, module.bn2 = _fold(module.conv2, module.bn2), nn.Identity()
    return model
