"""Toy models, one per streaming kind: all a new architecture needs is a file like this one.

Each class derives from its kind's base in ``vidseg_ros.models.contract`` and implements that kind's
core methods; one registry entry (``TOYS`` below: an entry of ``MODELS`` in the package, or
``register_model(name, cls)`` from outside it) then makes the engine, export, training and
checkpoints use it by name. ``test_model_contract.py`` registers these and runs them through all of it.
"""
import torch
from torch import nn

from vidseg_ros.models.contract import FrameModel, KeyframeModel, RecurrentModel


class ToyFrame(FrameModel):
    """Two convs at 1/2 resolution."""

    stride, output_stride = 4, 2

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def predict(self, x):
        return self.classifier(self.body(x))


class ToyKeyframe(KeyframeModel):
    """A 1/2-resolution part on every frame, a 1/4-resolution part cached from key frames."""

    stride, output_stride, cache_tensors = 4, 2, 1

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.low = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU())
        self.high = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def encode_low(self, x):
        return (self.low(x),)

    def encode_high(self, low):
        return (self.high(low[0]),)

    def decode(self, low, high):
        up = nn.functional.interpolate(high[0], size=low[0].shape[-2:], mode='nearest')
        return self.classifier(torch.cat([low[0], up], 1))


class ToyRecurrent(RecurrentModel):
    """One gated state tensor at 1/2 resolution; logits at full resolution."""

    stride, output_stride = 2, 1

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.enc = nn.Conv2d(3, width, 3, 2, 1)
        self.gate = nn.Conv2d(2 * width, width, 3, 1, 1)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def state_layout(self):
        return [(self.width, 2)]

    def advance(self, frame, state):
        h = torch.tanh(self.gate(torch.cat([torch.relu(self.enc(frame)), state[0]], 1)))
        up = nn.functional.interpolate(h, size=frame.shape[-2:], mode='bilinear', align_corners=False)
        return self.classifier(up), (h,)


TOYS = {'toy_frame': ToyFrame, 'toy_keyframe': ToyKeyframe, 'toy_recurrent': ToyRecurrent}
