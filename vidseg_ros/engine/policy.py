"""Key-frame policy: the one place that decides whether a frame is a key frame, and why.

Resets (temporal state cleared, the frame is a key frame) happen on the first frame, an explicit
reset, a failed step, a frame size change, a network geometry change (input size or tile grid, after
a setting change), a stamp going backwards (a bag looping) and a time gap above ``max_gap_s``.
Between resets, key frames come at a fixed interval, or adaptively when cheap low-level features
moved more than ``keyframe_threshold`` (relative) from those of the last key frame, and at the
latest after ``keyframe_max_interval`` frames. Models without a key-frame cache (recurrent,
per-frame) run fully on every frame: reason ``every_frame`` unless a reset applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from vidseg_ros.engine.base import EngineConfig

# Every key_reason the policy gives (diagnostics count each); RESET_REASONS also clear temporal state.
RESET_REASONS = ('start', 'reset', 'error', 'resize', 'network_size', 'tiles', 'backwards', 'gap')
KEY_REASONS = RESET_REASONS + ('interval', 'max_interval', 'adaptive', 'every_frame')


@dataclass
class Decision:
    """The policy's verdict for one frame."""

    is_key: bool
    reset_reason: str = ''   # non-empty when temporal state must be cleared first
    key_reason: str = ''     # why a key frame (one of KEY_REASONS), '' for a current frame
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
    """Decides key frames and resets from stamps, sizes, network geometry and (adaptive) feature change.

    Args:
        config: Engine settings (keyframe_policy, keyframe_interval, keyframe_max_interval,
            keyframe_threshold, max_gap_s).
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.reset('start')

    def update_config(self, config: EngineConfig) -> None:
        """New policy parameters take effect from the next frame; state is kept (a geometry change
        is seen on the next frame, as reason 'network_size' or 'tiles')."""
        self.config = config

    def reset(self, reason: str = 'reset') -> None:
        """Force a key frame (and report ``reason``, one of RESET_REASONS) on the next frame."""
        self._pending_reset = reason
        self._since_key = 0
        self._last_stamp_ns: int | None = None
        self._last_hw: tuple | None = None
        self._last_network: tuple | None = None
        self._last_tiles: tuple | None = None
        self._key_desc: torch.Tensor | None = None

    def decide(self, stamp_ns: int | None, hw: tuple[int, int],
               descriptor: Callable[[], torch.Tensor] | None = None, *, network: tuple = (),
               tiles: tuple = (), cached: bool = True) -> Decision:
        """Final verdict for the next frame of size ``hw`` at ``stamp_ns`` (None = no timing checks).

        Args:
            descriptor: called only by the adaptive policy (lazy: it costs a little).
            network: (resized, padded) network input size the temporal state is built for.
            tiles: the tile grid (boxes) the state is kept per.
            cached: the model keeps a key-frame cache; False (recurrent, per-frame) = every frame is a key.
        """
        cfg = self.config
        reason = self._reset_reason(stamp_ns, tuple(hw), tuple(network), tuple(tiles))
        want_desc = cached and cfg.keyframe_policy == 'adaptive' and descriptor is not None
        desc = descriptor() if want_desc else None
        if reason:
            return self._key(Decision(True, reason, reason), desc)
        if not cached:
            return Decision(True, '', 'every_frame')
        self._since_key += 1
        if cfg.keyframe_policy == 'fixed':
            if self._since_key >= max(1, cfg.keyframe_interval):
                return self._key(Decision(True, '', 'interval'), desc)
            return Decision(False)
        if self._since_key >= max(1, cfg.keyframe_max_interval):
            return self._key(Decision(True, '', 'max_interval'), desc)
        if desc is not None and self._key_desc is None:
            # no reference: the last key frame was the fixed policy's, before a switch to adaptive. This frame
            # is the reference from now on (without it nothing but max_interval made a key frame, a cut included)
            self._key_desc = desc
        change = relative_change(desc, self._key_desc) if desc is not None and self._key_desc is not None \
            else 0.0
        if change > cfg.keyframe_threshold:
            return self._key(Decision(True, '', 'adaptive', change), desc)
        return Decision(False, change=change)

    def _reset_reason(self, stamp_ns, hw, network, tiles) -> str:
        """Why state must be cleared before this frame ('' = it need not); remembers this frame."""
        reason, self._pending_reset = self._pending_reset, ''
        checks = ((hw, self._last_hw, 'resize'), (network, self._last_network, 'network_size'),
                  (tiles, self._last_tiles, 'tiles'))
        for now, last, why in checks:
            if not reason and last is not None and now != last:
                reason = why
        if not reason and stamp_ns is not None and self._last_stamp_ns is not None:
            if stamp_ns < self._last_stamp_ns:
                reason = 'backwards'
            # / 1e9, not * 1e-9: the product rounds up for 0.3, 0.6, 0.7, 1.2 s ..., so a camera exactly at
            # 1/max_gap_s reset on every frame (as extract's sequence split, which divides, does not)
            elif self.config.max_gap_s > 0 and (stamp_ns - self._last_stamp_ns) / 1e9 > self.config.max_gap_s:
                reason = 'gap'
        self._last_hw, self._last_network, self._last_tiles = hw, network, tiles
        if stamp_ns is not None:
            self._last_stamp_ns = stamp_ns
        return reason

    def _key(self, decision: Decision, desc: torch.Tensor | None) -> Decision:
        self._since_key = 0
        self._key_desc = desc
        return decision
