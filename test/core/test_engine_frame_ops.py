"""engine.frame_ops against first principles: what a resize must do to a pattern whose local mean is known, and
the sampling of the logits against torch's own interpolation."""
import numpy as np
import pytest
import torch

from vidseg_ros.engine.frame_ops import InputBuffer, logits_to_outputs, prob_to_u8


def _stripes(h, w, axis):
    """(h, w, 3) uint8: period-3 stripes 0, 255, 0 across ``axis`` (local mean 85), constant along the other."""
    line = np.tile(np.array([0, 255, 0], np.uint8), w if axis == 1 else h)[:w if axis == 1 else h]
    img = np.broadcast_to(line[None, :] if axis == 1 else line[:, None], (h, w))
    return np.repeat(img[:, :, None], 3, 2).copy()


@pytest.mark.parametrize('path', ['fill_cpu', 'fill'])
@pytest.mark.parametrize('src_hw, resized_hw, axis', [
    ((60, 90), (120, 30), 1),    # 3x narrower, 2x taller: smaller area
    ((60, 90), (240, 30), 1),    # 3x narrower, 4x taller: larger area
    ((90, 60), (30, 120), 0),    # the same across rows
    ((90, 60), (30, 240), 0),
    ((90, 90), (30, 30), 1),     # both axes shrink
    ((20, 90), (40, 30), 1),     # narrower, yet wider than the frame is high
])
def test_a_frame_shrunk_along_one_axis_is_averaged_along_it_whatever_the_other_does(path, src_hw, resized_hw, axis):
    # A 3x shrink of 0, 255, 0 stripes must give their mean, 85, wherever the other axis is stretched. The device
    # path antialiased only when the area shrank (255 at 240x30: every third column sampled); the CPU path's
    # INTER_AREA is no area average once an axis grows (OpenCV emulates it), nor is INTER_LINEAR on a larger area
    frame = _stripes(*src_hw, axis)
    buf = InputBuffer(torch.device('cpu'), [0.0] * 3, [1.0] * 3)
    arg = frame if path == 'fill_cpu' else buf.upload(frame)
    x = getattr(buf, path)(arg, resized_hw, resized_hw)[0] * 255.0          # (3, rh, rw) grey levels
    inner = x[:, :, 1:-1] if axis == 1 else x[:, 1:-1, :]                      # the border samples fewer stripes
    assert tuple(x.shape[1:]) == resized_hw
    assert float((inner - 85.0).abs().max()) <= 1.0, (path, float(inner.min()), float(inner.max()))


@pytest.mark.parametrize('path', ['fill_cpu', 'fill'])
def test_resizes_that_only_grow_stay_plain_bilinear(path):
    # the per-axis choice leaves growing axes bilinear (half-pixel centres), as torch's interpolate without
    # antialiasing gives them
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buf = InputBuffer(torch.device('cpu'), [0.0] * 3, [1.0] * 3)
    for hw in ((20, 75), (47, 30), (41, 64)):
        arg = frame if path == 'fill_cpu' else buf.upload(frame)
        got = getattr(buf, path)(arg, hw, hw)[0] * 255.0
        want = torch.nn.functional.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=hw,
                                               mode='bilinear', align_corners=False)[0]
        assert float((got - want).abs().max()) <= 1.0, (path, hw)   # OpenCV rounds to uint8


@pytest.mark.parametrize('mask_hw', [(60, 80), (45, 100), (30, 97)])
def test_the_overlay_of_a_larger_mask_stretches_the_frame_bilinearly(mask_hw):
    # the frame is resized to the mask's size (output_hw) before blending: growing, OpenCV's INTER_AREA it took is
    # nearly nearest-neighbour (32 grey levels on average from bilinear at 2x, the device path's antialiased
    # bilinear); with a zero-alpha overlay the result is the resized frame itself
    from vidseg_ros.engine.outputs import overlay
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    got = overlay(frame, np.zeros((*mask_hw, 3), np.uint8), 0.0).astype(float)
    t = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    want = torch.nn.functional.interpolate(t, size=mask_hw, mode='bilinear', align_corners=False,
                                           antialias=True)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= 1.0   # OpenCV rounds to uint8


@pytest.mark.parametrize('want_confidence', [False, True])
def test_the_device_path_gives_the_class_probability_asked_for_with_or_without_confidence(want_confidence):
    # against torch's own bilinear resize and softmax of the logits (unpadded input: one resize to the output)
    logits = torch.randn(1, 5, 6, 8, generator=torch.Generator().manual_seed(3)) * 2
    ids, conf, prob = logits_to_outputs(logits, (24, 32), (24, 32), (15, 41), want_confidence, 4, False)
    p = torch.softmax(torch.nn.functional.interpolate(logits, size=(15, 41), mode='bilinear',
                                                      align_corners=False)[0], 0)
    assert prob is not None and (conf is not None) == want_confidence
    torch.testing.assert_close(prob, p[4])
    torch.testing.assert_close(ids, p.argmax(0).to(torch.uint8))


def test_the_device_mono8_confidence_rounds_to_the_nearest_level():
    k = torch.arange(256)
    torch.testing.assert_close(prob_to_u8(k / 255.0), k.to(torch.uint8))
    got = prob_to_u8(torch.tensor([0.0, 0.5, 0.499, 1.0, -0.01, 1.01]))
    assert got.tolist() == [0, 128, 127, 255, 0, 255] and got.dtype == torch.uint8
