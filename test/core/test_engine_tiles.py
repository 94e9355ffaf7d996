"""TileGrid: tiles that cover the input on the stride grid, and a blend that gives back what they agree on."""
import itertools

import pytest
import torch

from vidseg_ros.engine.tiles import TileGrid, effective_tile

GEOMETRIES = [   # (network hw: a multiple of the stride, tile_size, tile_stride, model stride)
    ((96, 128), 64, 32, 32), ((64, 208), 64, 32, 16), ((208, 64), 64, 0, 16), ((96, 96), 60, 40, 32),
    ((288, 384), 100, 50, 32), ((256, 512), 224, 0, 8), ((64, 96), 1, 0, 32), ((64, 96), 64, 500, 32),
    ((96, 128), 64, 10, 32), ((64, 64), 64, 0, 32), ((40, 48), 0, 0, 8),
]


def _covered(grid: TileGrid) -> torch.Tensor:
    count = torch.zeros(grid.hw, dtype=torch.int64)
    for y, x, th, tw in grid.tiles:
        count[y:y + th, x:x + tw] += 1
    return count


@pytest.mark.parametrize('hw, size, step, stride', GEOMETRIES)
def test_tiles_cover_the_input_on_the_stride_grid(hw, size, step, stride):
    """Every network pixel is in a tile; tiles lie inside the input, start on the stride grid (so their logits
    land on the output grid), are the rounded tile size (or the whole side), start at 0 and end flush."""
    grid = TileGrid.for_input(hw, size, step, stride)
    tile = effective_tile(size, stride)
    assert (_covered(grid) >= 1).all()
    for y, x, th, tw in grid.tiles:
        assert 0 <= y and 0 <= x and y + th <= hw[0] and x + tw <= hw[1]
        assert y % stride == 0 and x % stride == 0
        if size > 0 and max(hw) > size:
            assert (th, tw) == (min(tile, hw[0]), min(tile, hw[1]))
    for axis in (0, 1):
        starts = sorted({t[axis] for t in grid.tiles})
        assert starts[0] == 0 and max(t[axis] + t[axis + 2] for t in grid.tiles) == hw[axis]
        assert len(grid) == len(set(grid.tiles))


def test_whole_image_when_tiling_is_off_or_not_needed():
    assert TileGrid.for_input((64, 96), 0, 0, 32).tiles == [(0, 0, 64, 96)]
    assert TileGrid.for_input((64, 96), 96, 0, 32).tiles == [(0, 0, 64, 96)]
    grid = TileGrid.for_input((64, 97), 96, 0, 1)
    assert len(grid) == 2 and grid.tiles == [(0, 0, 64, 96), (0, 1, 64, 96)]


def test_tile_stride_is_rounded_down_to_the_model_stride_and_defaults_to_three_quarters():
    """docs/models.md: tile_size rounded up, tile_stride rounded down; 0 = tile_size * 3 / 4 (README)."""
    starts = lambda g: sorted({x for _, x, _, _ in g.tiles})    # noqa: E731
    assert starts(TileGrid.for_input((64, 512), 128, 0, 32)) == [0, 96, 192, 288, 384]
    assert TileGrid.for_input((64, 512), 128, 0, 32).overlap == 32
    assert starts(TileGrid.for_input((64, 512), 128, 70, 32)) == [0, 64, 128, 192, 256, 320, 384]
    assert starts(TileGrid.for_input((64, 512), 100, 70, 32)) == [0, 64, 128, 192, 256, 320, 384]
    for step in (1, 10):     # at least the stride (1 is a stride, not the default)
        assert starts(TileGrid.for_input((64, 512), 128, step, 32)) == list(range(0, 416, 32))
    assert starts(TileGrid.for_input((64, 512), 128, 1000, 32)) == [0, 128, 256, 384]       # no gaps
    assert TileGrid.for_input((64, 512), 128, 1000, 32).overlap == 0


@pytest.mark.parametrize('hw, size, step, stride', GEOMETRIES)
@pytest.mark.parametrize('output_stride', [1, 4])
def test_blending_tiles_that_agree_gives_back_the_whole_map(hw, size, step, stride, output_stride):
    """Crops of one logit map blend back into it exactly: each tile is placed where it was cut and the
    weights are normalised."""
    grid = TileGrid.for_input(hw, size, step, stride)
    torch.manual_seed(0)
    full = torch.randn(1, 3, hw[0] // output_stride, hw[1] // output_stride)
    os_ = output_stride
    outs = [full[..., y // os_:(y + th) // os_, x // os_:(x + tw) // os_] for y, x, th, tw in grid.tiles]
    torch.testing.assert_close(grid.blend(outs, output_stride), full)


def test_tile_borders_count_least_in_an_overlap():
    """Two tiles that disagree (0 and 1) over a 64-pixel overlap: the blend ramps from one to the other
    across it, each tile winning on the half nearer its own interior, at the middle half and half."""
    grid = TileGrid.for_input((64, 192), 128, 64, 32)
    assert [t[1] for t in grid.tiles] == [0, 64] and grid.overlap == 64
    out = grid.blend([torch.zeros(1, 1, 64, 128), torch.ones(1, 1, 64, 128)], 1)[0, 0, 0]
    assert (out[:64] == 0).all() and (out[128:] == 1).all()
    ramp = out[64:128]
    assert (ramp[1:] > ramp[:-1]).all() and ramp[0] < 0.05 and ramp[-1] > 0.95
    assert torch.allclose(ramp[:32] + ramp.flip(0)[:32], torch.ones(32))    # symmetric about the middle
