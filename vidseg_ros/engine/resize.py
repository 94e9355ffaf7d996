"""OpenCV resize of a uint8 image, the interpolation chosen per axis (torch-free: the renderer uses it too)."""
from __future__ import annotations

import cv2
import numpy as np


def resize_image(image: np.ndarray, rh: int, rw: int) -> np.ndarray:
    """``image`` at (rh, rw): area averaging along a shrinking axis, bilinear (half-pixel centres) along a growing
    one, as torch's antialiased bilinear does on the device. OpenCV averages areas only when no axis grows;
    otherwise its INTER_AREA is a bilinear-like sampling that aliases worse than INTER_LINEAR (a 120x160 frame
    at 240x40: 40 grey levels from torch's antialiased resize on noise, 9 here) and, growing both axes, is
    nearly nearest-neighbour. A frame that shrinks along one axis and grows along the other is shrunk first."""
    h, w = image.shape[:2]
    if (rh, rw) == (h, w):
        return image
    if rh <= h and rw <= w:
        return cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    if rh < h:
        image = cv2.resize(image, (w, rh), interpolation=cv2.INTER_AREA)
    elif rw < w:
        image = cv2.resize(image, (rw, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
