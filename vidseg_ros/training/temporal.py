"""Temporal-consistency loss on real, unlabelled clips (a recurrent model's second signal).

Labels say what each frame shows; they do not say that a mask should not flicker. On clips of real
video (DAVIS, a recorded drive) the prediction of frame t-1, carried to frame t by the optical flow
between the frames, should equal the prediction of frame t wherever the flow can be trusted:

    L = mean over trusted pixels of sum_k |p_t(k) - warp(p_{t-1})(k)|,   p = softmax(logits)

A pixel is trusted where frame t-1 warped by the same flow matches frame t (mean absolute RGB
difference below ``PHOTO_TOLERANCE``): occlusions, lighting changes and flow errors drop out. The flow
(OpenCV DIS on BT.601 grey, ``metrics.optical_flow``, the one ``vidseg eval``'s TC uses) is computed from
the frames, without gradient.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import optical_flow

PHOTO_TOLERANCE = 0.04     # mean |RGB difference| (0..1) above which a warped pixel is not trusted


def backward_flows(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) frames in 0..1 -> (B, T-1, H, W, 2) flows from frame t back to frame t-1
    (``metrics.optical_flow``: the flow the TC metric uses)."""
    rgb = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    flows = [[optical_flow(clip[t - 1], clip[t]) for t in range(1, clip.shape[0])] for clip in rgb]
    return torch.from_numpy(np.asarray(flows, np.float32)).to(frames.device)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[..., y, x] = x[..., y + fy, x + fx]`` (bilinear); x (N, C, H, W), flow (N, H, W, 2)."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing='ij')
    gx = (xs + flow[..., 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[..., 1]) * (2 / max(h - 1, 1)) - 1
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode='bilinear', padding_mode='border', align_corners=True)


def trusted(frames: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """(B, T-1, H, W) bool: pixels of frame t that frame t-1, warped by the flow, reproduces."""
    b, t = frames.shape[:2]
    prev = frames[:, :-1].flatten(0, 1).float()
    now = frames[:, 1:].flatten(0, 1).float()
    err = (warp(prev, flows.flatten(0, 1)) - now).abs().mean(1)
    return (err < PHOTO_TOLERANCE).view(b, t - 1, *err.shape[-2:])


def temporal_consistency_loss(logits_seq: torch.Tensor, frames: torch.Tensor,
                              flows: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between each frame's class probabilities and its predecessor's carried by the flow.

    Args:
        logits_seq: (B, T, K, H, W) per-frame logits of a clip (at the frames' size).
        frames: (B, T, 3, H, W) the clip in 0..1 (for the flow and the trust mask).
        flows: optional precomputed ``backward_flows(frames)``.
    """
    if logits_seq.shape[1] < 2:
        return logits_seq.sum() * 0
    flows = backward_flows(frames) if flows is None else flows
    mask = trusted(frames, flows)
    prob = logits_seq.float().softmax(2)
    carried = warp(prob[:, :-1].flatten(0, 1), flows.flatten(0, 1)).view_as(prob[:, 1:])
    diff = (prob[:, 1:] - carried).abs().sum(2)
    return (diff * mask).sum() / mask.sum().clamp(min=1)
