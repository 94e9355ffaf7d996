"""Convolutional temporal cells: what carries a recurrent model's state from frame to frame.

Used by the recurrent UNet (a cell per encoder level) and the recurrent FPN (one cell on the
decoder's 1/8 path). A cell maps (input, previous state) to the new state with the input's shape.
"""
from __future__ import annotations

import torch
from torch import nn

TEMPORAL_CELLS = ('none', 'crnn', 'cgru')


class ConvRNNCell(nn.Module):
    """cRNN: ``y_t = tanh(C_x * x_t + C_h * y_{t-1})`` with k x k convolutions (3 by default; 1 makes the
    cell a per-pixel recurrence at about a ninth of the cost)."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        _check_kernel(kernel)
        self.conv_x = nn.Conv2d(channels, channels, kernel, 1, kernel // 2)
        self.conv_h = nn.Conv2d(channels, channels, kernel, 1, kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.conv_x.kernel_size == (1, 1):
            xf, hf = _pixels(x), _pixels(h)
            return pointwise(self.conv_x, xf, pointwise(self.conv_h, hf)).tanh_().view(x.shape)
        return torch.tanh(self.conv_x(x) + self.conv_h(h))


class ConvGRUCell(nn.Module):
    """cGRU: ``r,z = sigmoid(C_rz*[x,h])``, ``n = tanh(C_n*[x, r*h])``, ``h' = (1-z)*n + z*h``; k x k
    convolutions as in ConvRNNCell."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        _check_kernel(kernel)
        self.conv_rz = nn.Conv2d(2 * channels, 2 * channels, kernel, 1, kernel // 2)
        self.conv_n = nn.Conv2d(2 * channels, channels, kernel, 1, kernel // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.conv_n.kernel_size == (1, 1):
            return self._forward_pointwise(x, h)
        r, z = torch.sigmoid(self.conv_rz(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.conv_n(torch.cat([x, r * h], 1)))
        return (1 - z) * n + z * h

    def _forward_pointwise(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The same cell for 1x1 kernels as matrix products over pixels: Conv2d's per-call set-up and the
        separate element-wise passes cost more than the cell's arithmetic on a small state."""
        c, hf = x.shape[1], _pixels(h)
        xh = torch.cat([_pixels(x), hf], 1)
        r, z = pointwise(self.conv_rz, xh).sigmoid_().split(c, 1)
        n = pointwise(self.conv_n, torch.cat([xh[:, :c], r * hf], 1)).tanh_()
        return torch.addcmul(n, z, hf - n).view(x.shape)      # (1 - z) * n + z * h


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W), a view unless the tensor is channels_last."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def pointwise(conv: nn.Conv2d, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 ``conv`` on pixels (B, C_in, N) -> (B, C_out, N) as one matrix product (+ ``add``)."""
    w = conv.weight.flatten(1)
    # mm/bmm on the pixels as laid out: matmul's broadcasting of a 2-D weight over the batch transposed and
    # copied, and left a strided result that made the element-wise passes after it slower than the product.
    y = torch.mm(w, x[0]).unsqueeze(0) if x.shape[0] == 1 else torch.bmm(w.expand(x.shape[0], -1, -1), x)
    # y is a fresh tensor: adding in place is safe for autograd
    if conv.bias is not None:
        y.add_(conv.bias[:, None])
    return y if add is None else y.add_(add)


def _check_kernel(kernel: int) -> None:
    if not (isinstance(kernel, int) and kernel >= 1 and kernel % 2 == 1):
        raise ValueError(f'cell_kernel must be an odd integer >= 1 (the state keeps its size), got {kernel!r}')


CELLS = {'crnn': ConvRNNCell, 'cgru': ConvGRUCell}


class ResidualCell(nn.Module):
    """A temporal cell added to its input: ``h' = cell(x, h)``, ``y = x + C_o * h'`` (1x1, zero init).

    The state is ``h'``; at initialisation ``y = x``, so a network warm-started from its per-frame
    twin starts with exactly the twin's outputs and the cell only learns a temporal correction.
    """

    def __init__(self, cell: nn.Module, channels: int):
        super().__init__()
        self.cell = cell
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(x, h)
        return pointwise(self.out, _pixels(h), _pixels(x)).view(x.shape), h
