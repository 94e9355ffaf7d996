"""engine.upsample's promise per cell, against float64 bilinear logits computed here: a cell whose four corners
agree is that label, a cell of two labels takes one of them by their interpolated difference, and a cell of
three or more labels is decided from all logits (exact)."""
import numpy as np
import pytest

from vidseg_ros.engine import upsample
from vidseg_ros.engine.upsample import Upsampler, probabilities


def _axis(n_out, n_valid, n_low, n_net):
    s = np.clip((np.arange(n_out) + 0.5) * n_valid / n_out * n_low / n_net - 0.5, 0, n_low - 1)
    i0 = np.floor(s).astype(int)
    return i0, np.minimum(i0 + 1, n_low - 1), s - i0


def _reference(logits, valid_hw, net_hw, out_hw):
    """(C, H, W) float64 bilinear logits at the output pixels, and (H, W) sets of each pixel's corner labels."""
    y0, y1, fy = _axis(out_hw[0], valid_hw[0], logits.shape[1], net_hw[0])
    x0, x1, fx = _axis(out_hw[1], valid_hw[1], logits.shape[2], net_hw[1])
    lg = logits.astype(np.float64)
    top = lg[:, y0][:, :, x0] * (1 - fx) + lg[:, y0][:, :, x1] * fx
    bot = lg[:, y1][:, :, x0] * (1 - fx) + lg[:, y1][:, :, x1] * fx
    arg = logits.argmax(0)
    corners = np.stack([arg[y0][:, x0], arg[y0][:, x1], arg[y1][:, x0], arg[y1][:, x1]], -1)   # (H, W, 4)
    return top * (1 - fy[:, None]) + bot * fy[:, None], corners


@pytest.mark.parametrize('low_hw, valid_hw, net_hw, out_hw', [
    ((6, 8), (24, 32), (24, 32), (50, 70)),
    ((6, 8), (19, 27), (24, 32), (41, 90)),     # padded, blocks of unequal rows and columns
    ((5, 9), (20, 36), (20, 36), (37, 11)),     # shrinking one axis
])
def test_each_cell_is_decided_as_the_module_promises(low_hw, valid_hw, net_hw, out_hw):
    rng = np.random.default_rng(4)
    for trial in range(20):
        c = 3 + trial % 6
        logits = (rng.normal(size=(c, *low_hw)) * 2).astype(np.float32)   # rough: many cells of 3+ labels
        got = Upsampler(low_hw, valid_hw, out_hw, net_hw).labels(np.ascontiguousarray(logits.transpose(1, 2, 0)))
        ref, corners = _reference(logits, valid_hw, net_hw, out_hw)
        top2 = np.sort(ref, 0)[-2:]
        decided = top2[1] - top2[0] > 1e-4
        want = ref.argmax(0)
        n_labels = np.array([[len(set(p)) for p in row] for row in corners])
        in_corners = (corners == want[..., None]).any(-1)
        # one label: that label; three or more: exact; two: exact where the winner is one of the two
        must = decided & ((n_labels != 2) | in_corners)
        assert (n_labels >= 3).sum() > 0 and must.mean() > 0.5
        np.testing.assert_array_equal(got[must], want[must], err_msg=f'trial {trial}, {c} classes')
        two = (n_labels == 2) & ~in_corners    # the documented approximation: one of the two corner labels
        assert (got[two][:, None] == corners[two]).any(-1).all()


def test_blocks_computed_per_frame_equal_the_cached_table_for_unequal_block_sides(monkeypatch):
    # outputs too large for the cached block table compute the boundary blocks per frame, sliced to the
    # (rows, columns) of each group: with cells 3 rows by 11 columns a mix-up of the two would show
    rng = np.random.default_rng(9)
    geometry = ((8, 6), (29, 21), (23, 63), (32, 24))   # low, valid, out, net
    for c in (2, 7):
        logits = (rng.normal(size=(8, 6, c)) * 2).astype(np.float32)
        cached = Upsampler(*geometry)
        monkeypatch.setattr(upsample, 'BLOCK_TABLE_MAX', 0)
        computed = Upsampler(*geometry)
        monkeypatch.undo()
        assert cached._fy.shape[1] != cached._fx.shape[1] and cached._inner_rc[0] != cached._inner_rc[1]
        np.testing.assert_array_equal(computed.labels(logits), cached.labels(logits))
        assert computed._all_blocks is False and isinstance(cached._all_blocks, np.ndarray)


@pytest.mark.parametrize('c', [2, 3])
def test_confidence_across_a_gentle_boundary_follows_the_softmax_of_the_interpolated_logits(c):
    # a straight boundary: class 1's logit a ramp across class 0's flat one (class 2, if any, far below). Softmax
    # at network resolution, then interpolated, is then within a percent of the reference; along the band the
    # label's probability is floored at 1/C (what a top class has at least), and no higher: ~0.5 at the boundary
    low_hw, out_hw = (4, 8), (16, 32)
    logits = np.zeros((c, *low_hw), np.float32)
    logits[1] = 0.5 * (np.arange(8) - 3.3)[None, :]
    if c == 3:
        logits[2] = -8.0
    up = Upsampler(low_hw, (16, 32), out_hw, (16, 32))
    labels = up.labels(np.ascontiguousarray(logits.transpose(1, 2, 0)))
    conf, prob = probabilities(up, logits, True, 1, False)
    conf_u8, _ = probabilities(up, logits, True, None, True)
    ref, _ = _reference(logits, (16, 32), (16, 32), out_hw)
    p = np.exp(ref - ref.max(0))
    p /= p.sum(0)
    np.testing.assert_array_equal(labels, ref.argmax(0))
    assert len(up._band) > 0 and conf.min() < 0.55     # the boundary runs through the band
    np.testing.assert_allclose(conf, p.max(0), atol=0.01)
    np.testing.assert_allclose(prob, p[1], atol=0.01)
    np.testing.assert_allclose(conf_u8 / 255.0, p.max(0), atol=0.01)


def test_logits_at_the_output_size_give_the_same_uint8_confidence_as_float():
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(5, 6, 7)) * 2).astype(np.float32)
    up = Upsampler((6, 7), (6, 7), (6, 7), (6, 7))
    assert up.identity
    up.labels(np.ascontiguousarray(logits.transpose(1, 2, 0)))
    conf, _ = probabilities(up, logits, True, None, False)
    conf_u8, _ = probabilities(up, logits, True, None, True)
    p = np.exp(logits - logits.max(0))
    np.testing.assert_allclose(conf, 1.0 / p.sum(0), rtol=1e-6)
    np.testing.assert_array_equal(conf_u8, np.floor(conf.astype(np.float64) * 255 + 0.5))


def test_the_mono8_confidence_encoding_rounds_to_the_nearest_level():
    # k / 255 is level k; halfway rounds up; 0 and 1 are the ends of the range (clipped beyond)
    k = np.arange(256)
    np.testing.assert_array_equal(upsample.to_u8((k / 255.0).astype(np.float32)), k)
    got = upsample.to_u8(np.array([0.0, 0.5, 0.499, 1.0, -0.01, 1.01], np.float32))
    np.testing.assert_array_equal(got, [0, 128, 127, 255, 0, 255])
    assert got.dtype == np.uint8
