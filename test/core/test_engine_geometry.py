"""Upsampler geometries the other tests do not reach: logits 1-3 cells high or wide, padded inputs whose valid part
is a few pixels, outputs smaller than the logits or many times the valid part, non-integer factors."""
import numpy as np

from vidseg_ros.engine.upsample import Upsampler, probabilities, to_u8


def single_map_reference(logits, valid_hw, net_hw, out_hw):
    """(C, H, W) float64 logits bilinearly sampled at each output pixel's centre mapped into the valid part of the
    network input (half-pixel centres, clamped at the border): the interpolation the upsampler decides exactly."""
    def axis(n_out, n_valid, n_low, n_net):
        s = np.clip((np.arange(n_out) + 0.5) * n_valid / n_out * n_low / n_net - 0.5, 0, n_low - 1)
        i0 = np.floor(s).astype(int)
        return i0, np.minimum(i0 + 1, n_low - 1), s - i0
    y0, y1, fy = axis(out_hw[0], valid_hw[0], logits.shape[1], net_hw[0])
    x0, x1, fx = axis(out_hw[1], valid_hw[1], logits.shape[2], net_hw[1])
    lg = logits.astype(np.float64)
    top = lg[:, y0][:, :, x0] * (1 - fx) + lg[:, y0][:, :, x1] * fx
    bot = lg[:, y1][:, :, x0] * (1 - fx) + lg[:, y1][:, :, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def _outputs(up, logits, k):
    labels = up.labels(np.ascontiguousarray(logits.transpose(1, 2, 0)))
    conf, prob = probabilities(up, logits, True, k, False)
    return labels, conf, prob, probabilities(up, logits, True, None, True)[0]


def test_a_frame_smaller_than_one_logit_cell_shown_large_decides_only_the_cell_it_samples():
    # a 1x1 frame at the network's (32, 32): every output pixel samples logit (0, 0). The cells no pixel samples
    # (the rest of the first row and column among them) were decided in 480x640 blocks each: 0.8 s, 400 MB
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(11, 8, 8)) * 3).astype(np.float32)
    up = Upsampler((8, 8), (1, 1), (480, 640), (32, 32))
    labels, conf, _, _ = _outputs(up, logits, 0)
    assert (labels == logits[:, 0, 0].argmax()).all()
    p = np.exp(logits[:, 0, 0] - logits[:, 0, 0].max())
    np.testing.assert_allclose(conf, p.max() / p.sum(), rtol=1e-5)
    assert sum(part[0].size for part in up._band) <= 480 * 640   # one block at most: the sampled cell's


def test_tiny_and_padded_geometries_match_the_reference_and_the_ungrouped_band():
    """Seeded sweep: the band's inner/border grouping gives what full-size blocks for every cell give, two classes
    are decided exactly, and confidence / class probability stay consistent with the mask."""
    rng = np.random.default_rng(11)
    for case in range(240):
        low = tuple(int(v) for v in rng.integers(1, 4 if case % 2 else 9, 2))
        os_ = int(rng.choice([1, 2, 4, 8]))
        net = (low[0] * os_, low[1] * os_)
        valid = tuple(int(rng.integers(1, n + 1)) if rng.random() < 0.7 else n for n in net)
        out = tuple(int(v) for v in rng.integers(1, 48, 2))
        c, k = int(rng.integers(2, 8)), int(rng.integers(0, 2))
        logits = (rng.normal(size=(c, *low)) * 3).astype(np.float32)
        if case % 3 == 0:
            logits = np.round(logits)   # ties at the corners
        where = f'case {case}: {low} valid {valid} net {net} -> {out}, {c} classes'
        up = Upsampler(low, valid, out, net)
        got = _outputs(up, logits, k)
        ungrouped = Upsampler(low, valid, out, net)
        ungrouped._inner_rc = (ungrouped._fy.shape[1], ungrouped._fx.shape[1])
        for a, b in zip(got, _outputs(ungrouped, logits, k)):
            np.testing.assert_array_equal(a, b, err_msg=where)
        labels, conf, prob, conf_u8 = got
        assert labels.shape == conf.shape == prob.shape == conf_u8.shape == out, where
        if c == 2:
            ref = single_map_reference(logits, valid, net, out)
            decided = np.abs(ref[0] - ref[1]) > 1e-4
            np.testing.assert_array_equal(labels[decided], ref.argmax(0)[decided], err_msg=where)
        assert conf.min() >= 1 / c - 1e-6 and conf.max() <= 1 + 1e-6, where
        assert (prob <= conf + 1e-6).all() and prob.min() >= 0, where
        np.testing.assert_allclose(prob[labels == k], conf[labels == k], atol=1e-6, err_msg=where)
        assert np.abs(conf_u8.astype(int) - to_u8(conf)).max() <= 1, where
