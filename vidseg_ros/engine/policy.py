"""Key-frame policy: when to recompute the cached (key-frame) features and when to reset state.

Resets (state cleared, next frame is a key frame) happen on the first frame, an explicit reset, a
time gap above ``max_gap_s``, a stamp going backwards (a bag looping) and a resolution change.
Between resets, key frames come at a fixed interval, or adaptively when cheap low-level features
moved more than ``keyframe_threshold`` (relative) from those of the last key frame, and at the
latest after ``keyframe_max_interval`` frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from vidseg_ros.engine.base import EngineConfig


@dataclass
class Decision:
    """The policy's verdict for one frame."""

    is_key: bool
    reset_reason: str = ''   # non-empty when temporal state must be cleared first
    key_reason: str = ''     # why a key frame: reset reason, 'interval', 'adaptive', 'max_interval'
    change: float = 0.0      # relative feature change vs the last key frame (adaptive policy)


def change_descriptor(x: torch.Tensor, grid: int = 16) -> torch.Tensor:
    """Cheap low-level features of a normalised input (B, 3, H, W): colour and gradient energy on a
    coarse grid (1/grid of the size), so camera motion, cuts and lighting changes all register."""
    gray = x.float().mean(1, keepdim=True)
    gx = (gray[..., :, 1:] - gray[..., :, :-1]).abs()
    gy = (gray[..., 1:, :] - gray[..., :-1, :]).abs()
    size = (max(1, x.shape[-2] // grid), max(1, x.shape[-1] // grid))
    return torch.cat([F.adaptive_avg_pool2d(x.float(), size), F.adaptive_avg_pool2d(gx, size),
                      F.adaptive_avg_pool2d(gy, size)], 1)


def relative_change(desc: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean absolute difference relative to the reference's mean magnitude (0 = identical)."""
    return float((desc - ref).abs().mean() / (ref.abs().mean() + 1e-6))


class KeyframePolicy:
    """Decides key frames and resets from stamps, frame sizes and (adaptive) feature change.

    Args:
        config: Engine settings (keyframe_policy, keyframe_interval, keyframe_max_interval,
            keyframe_threshold, max_gap_s).
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.reset('start')

    def update_config(self, config: EngineConfig) -> None:
        """New policy parameters take effect from the next frame; state is kept."""
        self.config = config

    def reset(self, reason: str = 'reset') -> None:
        """Force a key frame (and report ``reason``) on the next frame."""
        self._pending_reset = reason
        self._since_key = 0
        self._last_stamp_ns: int | None = None
        self._last_hw: tuple[int, int] | None = None
        self._key_desc: torch.Tensor | None = None

    def decide(self, stamp_ns: int | None, hw: tuple[int, int],
               descriptor: Callable[[], torch.Tensor] | None = None) -> Decision:
        """Verdict for the next frame of size ``hw`` at ``stamp_ns`` (None = no timing checks).

        ``descriptor`` is called only by the adaptive policy (lazy: it costs a little).
        """
        cfg, reason = self.config, self._pending_reset
        if not reason and self._last_hw is not None and tuple(hw) != self._last_hw:
            reason = 'resize'
        if not reason and stamp_ns is not None and self._last_stamp_ns is not None:
            if stamp_ns < self._last_stamp_ns:
                reason = 'backwards'
            elif cfg.max_gap_s > 0 and (stamp_ns - self._last_stamp_ns) * 1e-9 > cfg.max_gap_s:
                reason = 'gap'
        self._pending_reset = ''
        self._last_hw = tuple(hw)
        if stamp_ns is not None:
            self._last_stamp_ns = stamp_ns
        want_desc = cfg.keyframe_policy == 'adaptive' and descriptor is not None
        desc = descriptor() if want_desc else None
        if reason:
            return self._key(Decision(True, reason, reason), desc)
        self._since_key += 1
        if cfg.keyframe_policy == 'fixed':
            if self._since_key >= max(1, cfg.keyframe_interval):
                return self._key(Decision(True, '', 'interval'), desc)
            return Decision(False)
        if self._since_key >= max(1, cfg.keyframe_max_interval):
            return self._key(Decision(True, '', 'max_interval'), desc)
        change = relative_change(desc, self._key_desc) if desc is not None and self._key_desc is not None \
            else 0.0
        if change > cfg.keyframe_threshold:
            return self._key(Decision(True, '', 'adaptive', change), desc)
        return Decision(False, change=change)

    def _key(self, decision: Decision, desc: torch.Tensor | None) -> Decision:
        self._since_key = 0
        self._key_desc = desc
        return decision

    @property
    def frames_since_key(self) -> int:
        return self._since_key

