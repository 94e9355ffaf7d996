"""What every model runner (``backends``, ``onnx_runner``) shares: its report read from the model's
``StreamInfo``, the probe of one key frame, and zero recurrent state of an exported state layout."""
from __future__ import annotations

import torch

from vidseg_ros.models.contract import StreamInfo


class Runner:
    """What every runner reports, read from its ``StreamInfo``."""

    info: StreamInfo

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def stride(self) -> int:
        return self.info.stride

    @property
    def output_stride(self) -> int:
        return self.info.output_stride

    def set_threads(self, num_threads: int) -> None:
        """Run the model's own thread pool at the engine's ``num_threads`` (``threads.ThreadCounts.onnx``): nothing
        here, torch's count is the engine's (``threads.use_threads``); the ONNX runner rebuilds its sessions."""

    def probe(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of one key frame of ``x`` (a step from zero state for other kinds), no state kept."""
        return self.key(x)[0] if self.kind == 'keyframe' else self.step(x, self.init_state(x))[0]


def zero_state(layout: tuple[tuple[int, int], ...], x, device, dtype):
    """Zero hidden state: one (B, C, H/f, W/f) tensor per ``(C, f)`` of the exported state layout."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    return tuple(torch.zeros(b, c, -(-h // f), -(-w // f), device=device, dtype=dtype) for c, f in layout)
