"""What ``augment.draw`` draws, over many samples: the frame resized to cover ``cover_hw`` as the engine fits it to
input_hw, the extra scale log-uniform over ``scale_range`` (both ends reached, 1x its median for [0.5, 2]), a flip
half the time, and the photometric factors over their documented ranges, each drawn on its own. Validation draws
none of them. (Mutants of these draws survived test_augment: the scale range never drawn, cover_hw never used.)"""
import numpy as np
import pytest

from vidseg_ros.training.augment import BLUR_SIGMA, AugmentConfig, draw

N = 2000


def _draws(cfg: AugmentConfig, hw=(96, 128), n: int = N, train: bool = True):
    return [draw(cfg, hw, np.random.default_rng(seed), train=train) for seed in range(n)]


@pytest.mark.parametrize('hw,cover,resize,out', [
    ((100, 200), [64, 64], 1.0, (64, 128)),       # the height decides: 0.64x
    ((200, 100), [64, 64], 1.0, (128, 64)),       # the width decides
    ((100, 200), [50, 300], 1.0, (150, 300)),     # 1.5x up: both sides cover [50, 300]
    ((100, 200), [64, 64], 0.5, (32, 64)),        # then resize_scale
])
def test_frames_are_resized_to_cover_cover_hw_then_by_resize_scale(hw, cover, resize, out):
    p = draw(AugmentConfig(cover_hw=cover, resize_scale=resize), hw, np.random.default_rng(0), train=False)
    scale = out[0] / hw[0]
    assert p.out_hw == out
    assert np.allclose(p.matrix, [[scale, 0, 0], [0, scale, 0]])
    # training without crop_hw keeps that size too (the random scale acts around it)
    assert draw(AugmentConfig(cover_hw=cover, resize_scale=resize), hw, np.random.default_rng(1)).out_hw == out


def test_the_extra_scale_is_log_uniform_over_scale_range():
    scales = np.array([p.matrix[1, 1] for p in _draws(AugmentConfig(scale_range=[0.5, 2.0]))])
    assert scales.min() >= 0.5 - 0.01 and scales.max() <= 2.0 + 0.01
    assert scales.min() < 0.52 and scales.max() > 1.9                # both ends are reached
    assert 0.93 < np.median(scales) < 1.07                              # log-uniform: median sqrt(0.5 * 2) = 1
    assert 0.45 < np.mean(scales < 1.0) < 0.55                          # a uniform draw: 1/3 below 1


def test_an_equal_scale_range_is_that_scale_and_validation_draws_none():
    assert {round(p.matrix[1, 1], 6) for p in _draws(AugmentConfig(scale_range=[1.5, 1.5]), n=20)} == {1.5}
    assert {round(p.matrix[1, 1], 6) for p in _draws(AugmentConfig(scale_range=[0.5, 2.0]), n=20,
                                                     train=False)} == {1.0}


def test_a_flip_is_drawn_half_the_time_and_never_without_hflip():
    flipped = np.mean([p.matrix[0, 0] < 0 for p in _draws(AugmentConfig(hflip=True))])
    assert 0.45 < flipped < 0.55
    assert not any(p.matrix[0, 0] < 0 for p in _draws(AugmentConfig(hflip=False), n=200))
    assert not any(p.matrix[0, 0] < 0 for p in _draws(AugmentConfig(hflip=True), n=200, train=False))


def test_colour_factors_cover_one_plus_minus_jitter_each_drawn_on_its_own():
    draws = _draws(AugmentConfig(jitter=0.2))
    for name in ('brightness', 'contrast', 'saturation'):
        values = np.array([getattr(p, name) for p in draws])
        assert values.min() >= 0.8 and values.max() <= 1.2, name
        assert values.min() < 0.81 and values.max() > 1.19, name
        assert 0.97 < values.mean() < 1.03, name
    assert not any(p.brightness == p.contrast == p.saturation for p in draws)
    assert all(p.hue == 0 and p.blur_sigma == 0 and p.noise_std == 0 for p in draws)


def test_hue_blur_and_noise_cover_their_ranges():
    hues = np.array([p.hue for p in _draws(AugmentConfig(hue_jitter=0.05))])
    assert hues.min() >= -0.05 and hues.max() <= 0.05 and hues.min() < -0.049 and hues.max() > 0.049
    blurs = [p.blur_sigma for p in _draws(AugmentConfig(blur_prob=0.3))]
    assert 0.26 < np.mean([b > 0 for b in blurs]) < 0.34                # blur_prob of the samples are blurred
    sigmas = np.array([b for b in blurs if b])
    assert sigmas.min() >= BLUR_SIGMA[0] and sigmas.max() <= BLUR_SIGMA[1]
    assert sigmas.min() < BLUR_SIGMA[0] + 0.02 and sigmas.max() > BLUR_SIGMA[1] - 0.02
    assert all(p.blur_sigma > 0 for p in _draws(AugmentConfig(blur_prob=1.0), n=50))
    noise = _draws(AugmentConfig(noise_std=10.0))
    stds = np.array([p.noise_std for p in noise])
    assert stds.min() >= 0 and stds.max() <= 10 and stds.min() < 0.1 and stds.max() > 9.9
    assert len({p.noise_seed for p in noise}) > N * 0.99                 # a noise field of its own per sample
    assert all(0 < p.noise_std <= 0.5 for p in _draws(AugmentConfig(noise_std=0.5), n=50))   # below 1 too
    assert all(p.brightness != 1 for p in _draws(AugmentConfig(jitter=0.01), n=50))


def test_validation_draws_no_colour_change():
    cfg = AugmentConfig(jitter=0.4, hue_jitter=0.1, blur_prob=1.0, noise_std=20.0, hflip=True)
    assert not any(p.changes_colour() for p in _draws(cfg, n=50, train=False))


def _photo(rgb, **kw):
    from vidseg_ros.training.augment import Params, photometric
    return photometric(np.asarray(rgb, np.uint8), Params(np.eye(2, 3), np.asarray(rgb).shape[:2], **kw))


def test_colour_changes_by_hand():
    """Brightness scales, contrast stretches about the frame's mean, saturation about each pixel's grey, and the
    result is clipped to 0..255 (never wrapped: 250 * 1.2 is 255, not 44); any blur above 0 blurs."""
    grey = [[[100] * 3, [200] * 3]]                                    # mean 150
    assert _photo(grey, brightness=1.2).tolist() == [[[120] * 3, [240] * 3]]
    assert _photo([[[250] * 3, [10] * 3]], brightness=1.2).tolist() == [[[255] * 3, [12] * 3]]
    assert _photo(grey, contrast=0.5).tolist() == [[[125] * 3, [175] * 3]]
    assert _photo([[[10] * 3, [200] * 3]], contrast=3.0).tolist() == [[[0] * 3, [255] * 3]]
    assert _photo([[[200, 100, 0]]], saturation=0.5).tolist() == [[[150, 100, 50]]]
    edge = np.zeros((9, 9, 3), np.uint8)
    edge[:, 5:] = 255
    assert not np.array_equal(_photo(edge, blur_sigma=0.5), edge)
    flat = np.full((16, 16, 3), 100, np.uint8)
    assert not np.array_equal(_photo(flat, noise_std=0.5, noise_seed=1), flat)     # noise below 1 too
    bright, dark = np.full((16, 16, 3), 250, np.uint8), np.full((16, 16, 3), 5, np.uint8)
    assert _photo(bright, noise_std=20.0, noise_seed=1).min() > 150        # clipped at 255, never wrapped to 0
    assert (_photo(bright, noise_std=20.0, noise_seed=1) == 255).any() and (_photo(dark, noise_std=20.0) == 0).any()


def test_hue_turns_the_hue_of_pale_colours_too_and_blur_spreads_both_ways():
    """A pale red (saturation 127, hue 0) a third of a turn on is green (shifting from the saturation channel
    gave magenta); a blurred dot spreads down as well as across."""
    assert _photo([[[200, 100, 100]]], hue=1 / 3)[0, 0].argmax() == 1
    dot = np.zeros((9, 9, 3), np.uint8)
    dot[4, 4] = 255
    blurred = _photo(dot, blur_sigma=0.8)
    assert blurred[3, 4, 0] > 0 and blurred[4, 3, 0] > 0
