"""Augmentation: photometric ops (shape, dtype, same on every frame of a sample, labels untouched),
label alignment and ignore padding under 0.5-2x scale jitter, and defaults that change nothing."""
import cv2
import numpy as np
import pytest

from vidseg_ros.training import augment
from vidseg_ros.training.augment import AugmentConfig, apply_image, apply_label, draw

IGNORE = 11
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]], np.uint8)


def _scene(h=96, w=128):
    """Blocks of 4 classes; the image colour is a function of the class (so alignment is checkable)."""
    label = np.zeros((h, w), np.uint8)
    label[:, w // 2:] = 1
    label[h // 2:, :w // 3] = 2
    label[h // 3:2 * h // 3, w // 3:2 * w // 3] = 3
    label[:4, :4] = IGNORE                                       # a void corner stays void
    rgb = COLOURS[np.minimum(label, 3)]
    return rgb, label


def _params(cfg, seed=0, hw=(96, 128)):
    return draw(cfg, hw, np.random.default_rng(seed), train=True)


@pytest.mark.parametrize('cfg', [AugmentConfig(jitter=0.4), AugmentConfig(hue_jitter=0.2),
                                 AugmentConfig(blur_prob=1.0), AugmentConfig(noise_std=20.0)],
                         ids=['bcs', 'hue', 'blur', 'noise'])
def test_each_photometric_op_keeps_shape_dtype_and_labels(cfg):
    rgb, label = _scene()
    p = _params(cfg)
    assert p.changes_colour()
    plain = augment.replace(p, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, blur_sigma=0.0,
                            noise_std=0.0)
    out = apply_image(rgb, p)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert not np.array_equal(out, apply_image(rgb, plain))      # it did something
    assert np.array_equal(apply_image(rgb, p), out)              # the same on every frame of a sample
    assert np.array_equal(apply_label(label, p, IGNORE), apply_label(label, plain, IGNORE))


def test_photometric_ops_do_what_they_say():
    rgb = np.full((32, 32, 3), (200, 30, 30), np.uint8)
    hue = augment.photometric(rgb, augment.Params(np.eye(2, 3), (32, 32), hue=1 / 3))
    assert hue[0, 0].argmax() == 1                               # red turned a third of a turn: green
    noisy = augment.photometric(rgb, augment.Params(np.eye(2, 3), (32, 32), noise_std=10.0, noise_seed=3))
    assert 7 < (noisy.astype(float) - rgb).std() < 13
    blurred = augment.photometric(noisy, augment.Params(np.eye(2, 3), (32, 32), blur_sigma=1.5))
    assert blurred.astype(float).std() < noisy.astype(float).std()


def test_defaults_change_nothing_and_draw_no_photometric():
    rgb, label = _scene()
    p = _params(AugmentConfig())
    assert not p.changes_colour()
    assert np.array_equal(apply_image(rgb, p), rgb) and np.array_equal(apply_label(label, p, IGNORE), label)
    # the new ops off: the same random stream (crop, flip, colour) as before they existed
    a = _params(AugmentConfig(scale_range=[0.5, 2.0], crop_hw=[64, 64], hflip=True, jitter=0.2), seed=4)
    b = _params(AugmentConfig(scale_range=[0.5, 2.0], crop_hw=[64, 64], hflip=True, jitter=0.2, hue_jitter=0.0,
                              blur_prob=0.0, noise_std=0.0), seed=4)
    assert np.array_equal(a.matrix, b.matrix) and (a.brightness, a.saturation) == (b.brightness, b.saturation)


@pytest.mark.parametrize('seed', range(12))
def test_scale_jitter_keeps_labels_aligned_and_pads_with_ignore(seed):
    """Scale 0.5-2.0, random crop at full size, flips: every labelled output pixel away from block
    edges has its class's colour; pixels outside the frame are ignore (black in the image)."""
    rgb, label = _scene()
    cfg = AugmentConfig(crop_hw=[96, 128], scale_range=[0.5, 2.0], hflip=True)
    p = _params(cfg, seed)
    img, lab = apply_image(rgb, p), apply_label(label, p, IGNORE)
    assert img.shape == (96, 128, 3) and lab.shape == (96, 128) and lab.dtype == np.uint8
    assert set(np.unique(lab)) <= {0, 1, 2, 3, IGNORE}
    for c in range(4):
        inner = cv2.erode((lab == c).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if inner.any():
            assert np.abs(img[inner].astype(int) - COLOURS[c]).max() <= 10, c   # colours are 170 apart
    outside = apply_label(np.zeros_like(label), p, IGNORE) == IGNORE    # pixels off the frame
    assert np.all(lab[outside] == IGNORE) and np.all(img[outside] == 0)
    if abs(np.linalg.det(p.matrix[:, :2])) < 0.98:               # shrunk: a full-size crop must pad
        assert outside.any()


def test_half_scale_pads_a_full_size_crop_with_ignore():
    rgb, label = _scene()
    p = _params(AugmentConfig(crop_hw=[96, 128], scale_range=[0.5, 0.5]))
    lab = apply_label(label, p, IGNORE)
    inside = lab != IGNORE
    assert 0.2 < inside.mean() < 0.3                              # a quarter of the crop is the frame
    assert (lab == IGNORE).sum() >= 96 * 128 * 0.7


@pytest.mark.parametrize('scale', [0.25, 0.3, 0.45])
@pytest.mark.parametrize('flip', [False, True])
@pytest.mark.parametrize('axis', [0, 1])
def test_a_frame_shrunk_more_than_2x_stays_on_its_label(scale, flip, axis):
    """Below half size the image is area-averaged first (cv2.resize, pixel centres at (i + 0.5) / s - 0.5) and
    then warped as if its pixel i sat at i / s: at 0.25 an edge in the image landed 0.75 px from the same edge
    in the label (nearest). An edge anywhere in the source is now where the label has it, as in the plain warp
    above half size (within half a pixel: the label rounds to whole pixels)."""
    h, w = 240, 320
    for seed in range(40):      # a draw with the flip asked for
        p = draw(AugmentConfig(resize_scale=scale, hflip=True), (h, w), np.random.default_rng(seed), train=True)
        if (p.matrix[0, 0] < 0) == flip:
            break
    assert abs(np.linalg.det(p.matrix[:, :2])) < 0.25 and p.out_hw == (round(h * scale), round(w * scale))
    for edge in range(100, 112):     # every phase of the edge against the output grid
        label = np.zeros((h, w), np.uint8)
        (label[edge:] if axis == 0 else label[:, edge:])[...] = 1
        rgb = np.repeat(label[..., None] * 255, 3, axis=2).astype(np.uint8)
        img = apply_image(rgb, p)[..., 0].astype(float) / 255
        lab = apply_label(label, p, IGNORE)
        line = (slice(None), 5) if axis == 0 else (5, slice(None))
        dark_img, dark_lab = (1 - img[line]).sum(), (lab[line] == 0).sum()   # where the edge is, in output px
        assert abs(dark_img - dark_lab) <= 0.51, (edge, dark_img, dark_lab)


@pytest.mark.parametrize('hw,crop,shifts', [((10, 12), [6, 8], ({0, -1, -2, -3, -4}, {0, -1, -2, -3, -4})),
                                            ((4, 4), [7, 6], ({0, 1, 2, 3}, {0, 1, 2})),
                                            ((5, 5), [5, 5], ({0}, {0}))])
def test_random_crops_reach_every_offset(hw, crop, shifts):
    """A crop inside the frame starts anywhere from the top-left to the bottom-right corner; a crop larger than
    the frame places it anywhere inside (padding around it): every offset is drawn, none beyond."""
    seen_y, seen_x = set(), set()
    for seed in range(300):
        m = draw(AugmentConfig(crop_hw=crop), hw, np.random.default_rng(seed), train=True).matrix
        seen_y.add(int(m[1, 2]))
        seen_x.add(int(m[0, 2]))
    assert (seen_y, seen_x) == shifts


@pytest.mark.parametrize('hw,crop,shift', [((10, 12), [6, 8], (-2, -2)), ((10, 13), [6, 8], (-2, -2)),
                                           ((4, 4), [7, 6], (2, 1)), ((6, 8), [6, 8], (0, 0))])
def test_the_validation_crop_is_centred(hw, crop, shift):
    """Not training: the crop is the frame's centre (an odd margin leaves its extra pixel at the bottom / right), a
    crop larger than the frame pads it around the middle; no flip, no scale."""
    m = draw(AugmentConfig(crop_hw=crop, hflip=True, scale_range=[0.5, 2.0]), hw, np.random.default_rng(0),
             train=False).matrix
    assert np.array_equal(m, [[1.0, 0.0, shift[1]], [0.0, 1.0, shift[0]]])
