"""The model contract: what the engine, export, training and fine-tuning rely on, written down once.

A model derives from the base of its streaming kind and implements only that kind's core methods;
the base derives every entry point the rest of the package calls:

============  ====================================  ============================================
kind          the model implements                  the base provides
============  ====================================  ============================================
'frame'       ``predict(x)``                        ``forward``, ``forward_step``
'keyframe'    ``encode_low``, ``encode_high``,      ``forward``, ``forward_step``, ``forward_key``,
              ``decode``, ``cache_tensors``         ``forward_current``
'recurrent'   ``state_layout()``, ``advance``       ``forward`` (frame or clip), ``forward_step``,
                                                    ``step``, ``init_state``
============  ====================================  ============================================

Every model also sets ``stride`` (input H and W must be multiples), ``output_stride`` (logits come at
1/output_stride of the input), ``num_classes`` and a final 1x1 conv ``classifier`` (fine-tuning swaps
it). ``stream_info()`` reports all of it as one frozen ``StreamInfo``; the engine, the exporter and
exported files read that and never guess from attributes. A class whose configuration removes its
temporal part (an FPN without cached levels, a UNet without cells) overrides ``kind`` with a property
returning 'frame', and the engine runs it per frame. One registry entry (``MODELS`` in
``models/__init__.py``, or ``register_model`` from outside the package) is the only other step to
make a new model usable everywhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ('frame', 'keyframe', 'recurrent')


@dataclass(frozen=True)
class StreamInfo:
    """How a model streams: what the engine, export metadata and the conformance test check.

    Attributes:
        kind: 'frame', 'keyframe' or 'recurrent' (``KINDS``).
        stride: Input height and width must be multiples of this (the engine pads).
        output_stride: Logits come at 1/output_stride of the input (divides ``stride``).
        num_classes: Logit channels.
        cache_tensors: Key-frame models: tensors ``forward_key`` returns after the logits.
        state_layout: Recurrent models: ``(channels, downsampling factor)`` per state tensor.
    """

    kind: str
    stride: int
    output_stride: int
    num_classes: int
    cache_tensors: int = 0
    state_layout: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'kind must be one of {", ".join(KINDS)}, got {self.kind!r}')
        if self.stride < 1 or self.output_stride < 1 or self.stride % self.output_stride:
            raise ValueError(f'output_stride {self.output_stride} must divide stride {self.stride}')
        if self.cache_tensors and self.kind != 'keyframe':
            raise ValueError(f'a {self.kind} model has no key-frame cache')
        if self.state_layout and self.kind != 'recurrent':
            raise ValueError(f'a {self.kind} model has no recurrent state')
        object.__setattr__(self, 'state_layout', tuple((int(c), int(f)) for c, f in self.state_layout))

    def to_dict(self) -> dict:
        """Plain values for exported files' metadata (lists, not tuples: JSON round-trips them)."""
        return dict(asdict(self), state_layout=[list(e) for e in self.state_layout])

    @classmethod
    def from_dict(cls, info: dict, num_classes: int) -> StreamInfo:
        """From exported metadata; files exported before ``cache_tensors``/``num_classes`` were
        recorded lack them (the runners do not need the first; the second comes from the meta). A
        missing kind is refused as an unknown one (a ValueError), not as a KeyError."""
        return cls(info.get('kind'), int(info['stride']), int(info['output_stride']),
                   int(info.get('num_classes', num_classes)), int(info.get('cache_tensors', 0)),
                   tuple(tuple(e) for e in info.get('state_layout', ())))


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() \
        or torch.compiler.is_compiling()


def check_input_size(x: torch.Tensor, stride: int) -> None:
    """Raise a ValueError suggesting the padded size when H or W is not a multiple of ``stride``."""
    if _tracing():
        return
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
        raise ValueError(f'input size {h}x{w} is not a multiple of the model stride {stride}; '
                         f'pad it to {ph}x{pw} (the engine does this for you)')


def _unimplemented(model, method: str) -> NotImplementedError:
    """The error of a kind base's core method a model did not implement (it was a bare NotImplementedError)."""
    base = next(c.__name__ for c in type(model).__mro__ if c.__dict__.get('core_methods'))
    return NotImplementedError(f'{type(model).__name__} derives from {base} but does not implement {method} '
                               '(vidseg_ros.models.contract)')


def _to_input_size(logits: torch.Tensor, hw) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(hw):
        return logits
    return F.interpolate(logits, size=tuple(hw), mode='bilinear', align_corners=False)


class SegmentationModel(nn.Module):
    """What every model provides; derive from ``FrameModel``, ``KeyframeModel`` or ``RecurrentModel``.

    The constructor takes ``num_classes`` (training and checkpoints pass it) and explicit keyword
    arguments; ``create_model`` records them as ``arch_config`` beside ``arch`` (the registry key).
    """

    kind: str = ''
    core_methods: tuple[str, ...] = ()     # what a kind base leaves to the model (register_model checks them)
    stride: int = 1
    output_stride: int = 1
    num_classes: int = 0
    cache_tensors: int = 0
    classifier: nn.Conv2d

    def stream_info(self) -> StreamInfo:
        kind = self.kind
        return StreamInfo(kind, int(self.stride), int(self.output_stride), int(self.num_classes),
                          int(self.cache_tensors) if kind == 'keyframe' else 0,
                          tuple(self.state_layout()) if kind == 'recurrent' else ())

    def state_layout(self) -> list[tuple[int, int]]:
        """(channels, downsampling factor) of each recurrent state tensor; none for other kinds."""
        return []

    def forward_step(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(logits at 1/output_stride, *new state)``: the entry point per-frame and recurrent
        models are run and exported through."""
        raise NotImplementedError(f'{type(self).__name__} must derive from a kind base of models.contract')

    def replace_classifier(self, num_classes: int) -> None:
        """A fresh final 1x1 classifier for ``num_classes`` (fine-tuning to another class set)."""
        head = self.classifier
        if not isinstance(head, nn.Conv2d):
            raise TypeError(f'{type(self).__name__}.classifier must be an nn.Conv2d, got {type(head).__name__}')
        self.classifier = nn.Conv2d(head.in_channels, num_classes, head.kernel_size).to(
            head.weight.device, head.weight.dtype)
        self.num_classes = num_classes
        if isinstance(getattr(self, 'arch_config', None), dict):
            self.arch_config = dict(self.arch_config, num_classes=num_classes)


class FrameModel(SegmentationModel):
    """Per-frame model: implement ``predict(x) -> logits at 1/output_stride``."""

    kind = 'frame'
    core_methods = ('predict',)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise _unimplemented(self, 'predict')

    def forward_step(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.predict(x),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, K, H, W)."""
        check_input_size(x, self.stride)
        return _to_input_size(self.predict(x), x.shape[-2:])


class KeyframeModel(SegmentationModel):
    """Key-frame model: a cheap part run on every frame and an expensive one cached from key frames.

    Implement ``encode_low(x) -> tuple`` (every frame), ``encode_high(low) -> tuple of
    cache_tensors tensors`` (key frames only; empty when nothing is cached) and
    ``decode(low, high) -> logits at 1/output_stride``. The key-frame training loss calls the
    three directly; the engine and exports call ``forward_key``/``forward_current``.
    """

    kind = 'keyframe'
    core_methods = ('encode_low', 'encode_high', 'decode')

    def encode_low(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise _unimplemented(self, 'encode_low')

    def encode_high(self, low: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise _unimplemented(self, 'encode_high')

    def decode(self, low: tuple[torch.Tensor, ...], high: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise _unimplemented(self, 'decode')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full model on one frame: (B, C, H, W) -> logits (B, K, H, W)."""
        check_input_size(x, self.stride)
        return _to_input_size(self.forward_step(x)[0], x.shape[-2:])

    def forward_key(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Key frame: (logits, *cache). Flat tuple so it traces/exports."""
        low = self.encode_low(x)
        high = self.encode_high(low)
        return (self.decode(low, high),) + tuple(high)

    def forward_current(self, x: torch.Tensor, *cache: torch.Tensor) -> torch.Tensor:
        """Current frame from a key frame's cache: logits."""
        return self.decode(self.encode_low(x), tuple(cache))

    def forward_step(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor]:
        """The whole model as a stateless step: ``(logits,)``."""
        low = self.encode_low(x)
        return (self.decode(low, self.encode_high(low)),)


class RecurrentModel(SegmentationModel):
    """Recurrent model: state is data, a flat tuple of tensors laid out by ``state_layout()``.

    Implement ``state_layout()`` and ``advance(frame, state) -> (logits, new state)``, which always
    gets a full state (zeros from ``init_state`` on the first frame).
    """

    kind = 'recurrent'
    core_methods = ('state_layout', 'advance')

    def state_layout(self) -> list[tuple[int, int]]:
        raise _unimplemented(self, 'state_layout')

    def advance(self, frame: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        raise _unimplemented(self, 'advance')

    def init_state(self, batch: int, height: int, width: int, device=None,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        """Zero state for frames of ``height`` x ``width`` (empty when the layout is)."""
        return tuple(torch.zeros(batch, c, -(-height // f), -(-width // f), device=device, dtype=dtype)
                     for c, f in self.state_layout())

    def step(self, frame: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame (B, C, H, W) and the previous state (None/empty = zeros) -> (logits, new state)."""
        check_input_size(frame, self.stride)
        if not state:
            state = self.init_state(frame.shape[0], frame.shape[-2], frame.shape[-1], frame.device, frame.dtype)
        logits, new_state = self.advance(frame, tuple(state))
        return logits, tuple(new_state)

    def forward_step(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Flat ``(logits, *state)`` version of ``step`` for tracing and export."""
        logits, new_state = self.step(frame, state)
        return (logits,) + new_state

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """A frame (B, C, H, W) -> logits (B, K, H, W), or a clip (B, T, C, H, W) -> (B, T, K, H, W).

        A clip starts from ``state`` (zeros when None) and equals ``step`` over its frames.
        """
        if x.dim() == 4:
            return _to_input_size(self.step(x, state)[0], x.shape[-2:])
        outs = []
        for t in range(x.shape[1]):
            logits, state = self.step(x[:, t], state)
            outs.append(_to_input_size(logits, x.shape[-2:]))
        return torch.stack(outs, 1)


@runtime_checkable
class KeyframeSplit(Protocol):
    """What the key-frame training loss calls: ``KeyframeModel``'s three parts."""

    def encode_low(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def encode_high(self, low: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]: ...

    def decode(self, low: tuple[torch.Tensor, ...], high: tuple[torch.Tensor, ...]) -> torch.Tensor: ...


@runtime_checkable
class Stepper(Protocol):
    """What clip training calls: ``RecurrentModel.step`` (an empty state starts from zeros)."""

    def step(self, frame: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]: ...


def stream_info(model) -> StreamInfo:
    """``model.stream_info()``, or a TypeError naming the contract for a module that lacks it."""
    info = getattr(model, 'stream_info', None)
    info = info() if callable(info) else None
    if not isinstance(info, StreamInfo):
        raise TypeError(f'{type(model).__name__} does not follow the model contract: derive it from '
                        'FrameModel, KeyframeModel or RecurrentModel (vidseg_ros.models.contract)')
    return info
