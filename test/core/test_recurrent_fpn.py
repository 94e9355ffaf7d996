"""The recurrent FPN (issue #16): warm-started from a per-frame FPN checkpoint it starts as that FPN,
its one state tensor is p2_ch channels at 1/8, and the cell is what training changes."""
import pytest
import torch

from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import transfer_weights


def _pair(cell='cgru', kernel=3):
    torch.manual_seed(0)
    twin = create_model('keyframe_fpn', num_classes=4, cached_levels=0, width_mult=0.5).eval()
    rec = create_model('recurrent_fpn', num_classes=4, width_mult=0.5, temporal_cell=cell,
                       cell_kernel=kernel).eval()
    return twin, rec, transfer_weights(rec, twin.state_dict(), 'twin')


@pytest.mark.parametrize('cell, kernel', [('cgru', 3), ('crnn', 3), ('cgru', 1), ('crnn', 1)])
def test_warm_started_from_the_per_frame_fpn_it_equals_it(cell, kernel):
    twin, rec, report = _pair(cell, kernel)
    # every FPN tensor moves under its own name; only the cell starts fresh
    assert report['unused'] == 0 and all(n.startswith('cell.') for n in report['reinitialised_names'])
    clip = torch.randn(1, 4, 3, 64, 96)
    with torch.no_grad():
        out = rec(clip)
        ref = torch.stack([twin(clip[:, t]) for t in range(clip.shape[1])], 1)
        _, state = rec.step(clip[:, 0])
    assert torch.equal(out, ref)
    assert [tuple(s.shape[1:]) for s in state] == [(16, 8, 12)]
    assert rec.stream_info().state_layout == ((16, 8),) and rec.stream_info().kind == 'recurrent'


@pytest.mark.parametrize('kernel', [3, 1])
def test_a_trained_cell_carries_the_past(kernel):
    _, rec, _ = _pair(kernel=kernel)
    torch.nn.init.normal_(rec.cell.out.weight, std=0.5)      # what training would do
    a, b = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        after_a = rec(torch.stack([a, b], 1))[:, 1]
        fresh = rec(b)
    assert not torch.allclose(after_a, fresh, atol=1e-4)      # the output of b depends on a


def test_a_1x1_cell_is_per_pixel_and_a_ninth_of_the_3x3_one():
    _, k3, _ = _pair(kernel=3)
    _, k1, _ = _pair(kernel=1)
    convs = [n for n, p in k1.cell.named_parameters() if n.endswith('weight') and p.dim() == 4]
    assert all(dict(k1.cell.named_parameters())[n].shape[-2:] == (1, 1) for n in convs)
    gates = sum(p.numel() for n, p in k1.cell.cell.named_parameters() if n.endswith('weight'))
    assert gates * 9 == sum(p.numel() for n, p in k3.cell.cell.named_parameters() if n.endswith('weight'))
    for bad in (0, 2, -1):
        with pytest.raises(ValueError, match='cell_kernel must be an odd integer'):
            create_model('recurrent_fpn', cell_kernel=bad)
    with pytest.raises(ValueError, match='cell_kernel: expected int, got float 1.0'):   # the arch_config type check
        create_model('recurrent_fpn', cell_kernel=1.0)


def test_without_a_cell_it_is_the_per_frame_fpn():
    twin, rec, report = _pair('none')
    assert rec.kind == 'frame' and rec.state_layout() == [] and report['reinitialised'] == 0
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(rec(x), twin(x))
    with pytest.raises(ValueError, match='unknown temporal_cell'):
        create_model('recurrent_fpn', temporal_cell='lstm')


def test_the_engine_streams_its_state_and_resets_it():
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    from vidseg_ros.models.checkpoint import default_meta
    _, rec, _ = _pair()
    torch.nn.init.normal_(rec.cell.out.weight, std=0.5)
    meta = default_meta('recurrent_fpn', rec.arch_config, input_hw=(64, 96))

    def fresh():
        return StreamSegmenter(rec, meta, EngineConfig(device='cpu', input_hw=[64, 96]))
    rng = torch.Generator().manual_seed(1)
    a, b = (torch.randint(0, 255, (64, 96, 3), generator=rng, dtype=torch.uint8).numpy() for _ in range(2))
    eng = fresh()
    eng.step(a, 0)
    after_a = eng.step(b, 33_000_000, want_confidence=True)
    alone = fresh().step(b, 0, want_confidence=True)
    assert after_a.is_key and after_a.reset_reason == ''
    assert abs(after_a.confidence - alone.confidence).max() > 1e-4       # the state carried a
    eng.reset()
    again = eng.step(b, 66_000_000, want_confidence=True)
    assert abs(again.confidence - alone.confidence).max() < 1e-5


@pytest.mark.parametrize('cell', ['cgru', 'crnn'])
@pytest.mark.parametrize('kernel', [1, 3])
def test_cells_compute_their_convolution_formulas(cell, kernel):
    """1x1 cells and the residual output run as matrix products over pixels (cheaper than Conv2d on a
    small state): the same values and gradients as the convolutions their weights belong to, in both
    memory formats and for a batch."""
    from vidseg_ros.models.temporal_cells import CELLS, ResidualCell
    torch.manual_seed(0)
    res = ResidualCell(CELLS[cell](16, kernel), 16)
    torch.nn.init.normal_(res.out.weight, std=0.3)
    c = res.cell

    def reference(x, h):
        if cell == 'cgru':
            r, z = torch.sigmoid(c.conv_rz(torch.cat([x, h], 1))).chunk(2, 1)
            new = (1 - z) * torch.tanh(c.conv_n(torch.cat([x, r * h], 1))) + z * h
        else:
            new = torch.tanh(c.conv_x(x) + c.conv_h(h))
        return x + res.out(new), new

    x, h = torch.randn(2, 16, 9, 12), torch.randn(2, 16, 9, 12)
    want = reference(x, h)
    grads_want = torch.autograd.grad(sum(t.square().sum() for t in want), list(res.parameters()))
    for fmt in (torch.contiguous_format, torch.channels_last):
        got = res(x.to(memory_format=fmt), h.to(memory_format=fmt))
        for g, w in zip(got, want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(sum(t.square().sum() for t in res(x, h)), list(res.parameters()))
    for g, w in zip(grads, grads_want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
