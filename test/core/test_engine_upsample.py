"""engine.upsample's promise per cell, against float64 bilinear logits computed here: a cell whose four corners
agree is that label, a cell of two labels takes one of them by their interpolated difference, and a cell of
three or more labels is decided from all logits (exact)."""
import numpy as np
import pytest

from vidseg_ros.engine import upsample
from vidseg_ros.engine.upsample import Upsampler


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
    geometry = ((8, 6), (29, 21), (32, 24), (23, 63))
    for c in (2, 7):
        logits = (rng.normal(size=(8, 6, c)) * 2).astype(np.float32)
        cached = Upsampler(*geometry)
        monkeypatch.setattr(upsample, 'BLOCK_TABLE_MAX', 0)
        computed = Upsampler(*geometry)
        monkeypatch.undo()
        assert cached._fy.shape[1] != cached._fx.shape[1] and cached._inner_rc[0] != cached._inner_rc[1]
        np.testing.assert_array_equal(computed.labels(logits), cached.labels(logits))
        assert computed._all_blocks is False and isinstance(cached._all_blocks, np.ndarray)
