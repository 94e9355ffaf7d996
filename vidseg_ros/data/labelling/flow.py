"""Dense optical flow on frames of any size: the one guard for OpenCV's DIS flow on small frames.

OpenCV's DIS flow refuses frames under 12 px a side (cv2.error, 'The input image must have either width or height
>= 12') and kills the process (SIGSEGV) on frames whose shorter side is a little larger and whose longer side is
>= ~40 px (measured, OpenCV 5.0, shorter side 12..47 against longer sides up to 2050): the medium preset (finest
scale 1) on shorter sides 12..15, fast and ultrafast (finest scale 2) on 12..31 (longer sides >= ~80 from 16 up);
finest scale 0 (propagation's ``fine``) on none of 12..47. That is every shorter side under ``8 * 2**finest scale``
(the patch size at the finest level computed), and never at or above it. :func:`flow_any_size` computes the flow
of such frames on copies enlarged to a safe size (:func:`dis_min_side`) and brings it back to their size.
``training.metrics.optical_flow`` (TC in ``vidseg eval``, the temporal loss) and the flow of label propagation
both go through it.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

MIN_FLOW_SIDE = 16    # the DIS medium preset's (finest scale 1): the flow of vidseg eval's TC


def dis_min_side(dis) -> int:
    """The shorter side a ``cv2.DISOpticalFlow`` is safe on: ``8 * 2**finest scale``, at least MIN_FLOW_SIDE."""
    return max(MIN_FLOW_SIDE, 8 << max(0, int(dis.getFinestScale())))


def flow_any_size(calc: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray,
                  min_side: int = MIN_FLOW_SIDE) -> np.ndarray:
    """``calc(a, b)``, a dense (H, W, 2) flow between two images of one size (any channel count), also for images
    under ``min_side`` a side: those are enlarged (bilinear) so their shorter side is ``min_side``, and the flow of
    the enlarged pair is resized back and its vectors scaled to pixels of ``a`` and ``b``."""
    h, w = b.shape[:2]
    if min(h, w) >= min_side:
        return calc(a, b)
    scale = min_side / min(h, w)
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))   # (W', H')
    big = calc(*(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in (a, b)))
    flow = cv2.resize(big, (w, h), interpolation=cv2.INTER_LINEAR)
    return flow / np.array([size[0] / w, size[1] / h], np.float32)
