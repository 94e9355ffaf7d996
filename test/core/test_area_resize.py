"""The CPU pre-processing's area resize (engine/area_resize.py) against OpenCV's INTER_AREA, which the
shipped models were trained and evaluated with."""
import warnings

import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.engine.area_resize import AreaResizer, block_weights, supported
from vidseg_ros.engine.frame_ops import InputBuffer

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _grey_levels(out: torch.Tensor, buf: InputBuffer) -> np.ndarray:
    """Normalised (3, h, w) -> (h, w, 3) grey levels, to compare with OpenCV's uint8 result."""
    return ((out - buf.offset) / buf.scale).permute(1, 2, 0).numpy()


def test_block_weights_of_three_fifths():
    w = block_weights(640, 384)                       # 5 source pixels -> 3 outputs, each 5/3 wide
    np.testing.assert_allclose(w, np.array([[3, 2, 0, 0, 0], [0, 1, 3, 1, 0], [0, 0, 0, 2, 3]]) / 5)
    for n_in, n_out in [(720, 288), (1080, 288), (37, 20), (7, 7)]:
        np.testing.assert_allclose(block_weights(n_in, n_out).sum(1), 1.0)


@pytest.mark.parametrize('in_hw,out_hw,mismatch', [
    ((480, 640), (288, 384), 0),       # VGA camera, shipped input size (3/5)
    ((720, 960), (288, 384), 0),       # CamVid native (2/5)
    ((720, 1280), (288, 384), 0.01),   # 720p (2/5, 3/10): OpenCV's float sums round exact .5 either way
    ((1080, 1920), (288, 384), 0),     # 1080p (4/15, 1/5)
    ((576, 768), (288, 384), 0),       # the sample video (1/2: OpenCV's integer path rounds .5 up)
    ((53, 37), (20, 30), 0),           # odd sizes, one period spanning the whole axis
    ((480, 640), (480, 384), 0),       # one axis unchanged
])
def test_equals_opencv_inter_area(in_hw, out_hw, mismatch):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*in_hw, 3), np.uint8)     # noise: every weight shows
    buf = InputBuffer(torch.device('cpu'), MEAN, STD)
    out = torch.empty(3, *out_hw)
    AreaResizer(in_hw, out_hw, buf.scale, buf.offset)(img, out)
    ref = cv2.resize(img, out_hw[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
    diff = np.abs(_grey_levels(out, buf) - ref)
    assert diff.max() <= 1 + 1e-3 and (diff > 1e-3).mean() <= mismatch


def test_sizes_it_does_not_handle_are_refused_and_left_to_opencv():
    assert not supported((480, 640), (600, 384))      # an axis grows
    assert not supported((480, 854), (288, 384))      # DAVIS width: a period of 427 pixels
    assert supported((480, 640), (288, 384))
    with pytest.raises(ValueError, match='period'):
        AreaResizer((480, 854), (288, 384), torch.ones(3), torch.zeros(3))
    # fill_cpu falls back to OpenCV there, and the padding of the reused buffer stays the mean colour (0)
    rng = np.random.default_rng(1)
    buf = InputBuffer(torch.device('cpu'), MEAN, STD)
    for in_hw in [(480, 640), (480, 854), (480, 640)]:
        img = rng.integers(0, 256, (*in_hw, 3), np.uint8)
        x = buf.fill_cpu(img, (200, 300), (224, 320))
        ref = cv2.resize(img, (300, 200), interpolation=cv2.INTER_AREA).astype(np.float32)
        diff = np.abs(_grey_levels(x[0, :, :200, :300], buf) - ref)
        assert diff.max() <= 1 + 1e-3 and (diff > 1e-3).mean() <= 0.01   # 32/15 and 12/5: exact .5 either way
        assert not x[0, :, 200:].any() and not x[0, :, :, 300:].any()


def test_read_only_and_strided_frames():
    """Frames from a ROS message buffer are read-only, crops are strided: both are resized as they are,
    without torch's warning about non-writable arrays."""
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (480, 700, 3), np.uint8)
    crop = base[:, 30:670]
    frozen = np.frombuffer(base[:, :640].copy().tobytes(), np.uint8).reshape(480, 640, 3)
    buf = InputBuffer(torch.device('cpu'), MEAN, STD)
    for img in (crop, frozen):
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            x = buf.fill_cpu(img, (288, 384), (288, 384))
        ref = cv2.resize(np.ascontiguousarray(img), (384, 288), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(_grey_levels(x[0], buf) - ref).max() <= 1e-3
