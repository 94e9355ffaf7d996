"""Tiny stand-ins with the same interfaces as the real model families (fast loop tests)."""
import torch
from torch import nn


class TinyKeyframe(nn.Module):
    """encode_low / encode_high / decode split like the key-frame FPN."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.high = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.head = nn.Conv2d(16, num_classes, 1)

    def encode_low(self, x):
        return self.low(x)                                       # (B, 8, H/2, W/2)

    def encode_high(self, low):
        return (self.high(low),)                                 # (B, 8, H/4, W/4)

    def decode(self, low, high):
        up = nn.functional.interpolate(high[0], size=low.shape[-2:], mode='nearest')
        return self.head(torch.cat([low, up], 1))                # (B, K, H/2, W/2)

    def forward(self, x):
        low = self.encode_low(x)
        return self.decode(low, self.encode_high(low))


class TinyRecurrent(nn.Module):
    """step(frame, state) / init_state / clip forward like the recurrent UNet."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, 2, 1)
        self.gate = nn.Conv2d(16, 8, 3, 1, 1)
        self.head = nn.Conv2d(8, num_classes, 1)

    def init_state(self, batch, height, width, device=None, dtype=torch.float32):
        return (torch.zeros(batch, 8, height // 2, width // 2, device=device, dtype=dtype),)

    def step(self, frame, state=None):
        if not state:
            state = self.init_state(frame.shape[0], *frame.shape[-2:], frame.device)
        x = torch.relu(self.enc(frame))
        h = torch.tanh(self.gate(torch.cat([x, state[0]], 1)))
        return self.head(h), (h,)

    def forward(self, clip, state=None):
        if clip.dim() == 4:
            return self.step(clip, state)[0]
        outs = []
        for t in range(clip.shape[1]):
            y, state = self.step(clip[:, t], state)
            outs.append(y)
        return torch.stack(outs, 1)


def frames(n: int = 8, hw=(32, 32), k: int = 3, seed: int = 0):
    """Synthetic frame samples whose label is a function of colour (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = torch.randint(0, k, (hw[0] // 8, hw[1] // 8), generator=g)
        label = label.repeat_interleave(8, 0).repeat_interleave(8, 1)
        image = torch.stack([(label == c).float() for c in range(3)]) * 0.8 + 0.1
        items.append({'image': image, 'label': label})
    return items
