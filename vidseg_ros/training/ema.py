"""Exponential moving average of the weights: smoother than the last step's, what is validated and saved."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of the model whose floating tensors (weights and BatchNorm statistics) follow
    ``decay * ema + (1 - decay) * model`` after every optimiser step; integer buffers are copied.

    The decay ramps up as ``min(decay, (1 + step) / (10 + step))``, so the first steps do not leave
    the average stuck near the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model.module if hasattr(model, 'module') else model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        live = (model.module if hasattr(model, 'module') else model).state_dict()
        for name, avg in self.module.state_dict().items():
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(live[name].detach(), alpha=1 - d)
            else:
                avg.copy_(live[name])
