"""Residual temporal cells (issue 6): a recurrent UNet warm-started from its per-frame twin starts equal to it."""
import torch

from vidseg_ros.models import create_model


def test_residual_cells_start_as_the_twin():
    torch.manual_seed(0)
    twin = create_model('recurrent_unet', num_classes=3, size='small_shallow', block='resnet',
                        temporal_cell='none').eval()
    rec = create_model('recurrent_unet', num_classes=3, size='small_shallow', block='resnet',
                       temporal_cell='cgru', temporal_levels=2, residual_cells=True).eval()
    missing, unexpected = rec.load_state_dict(twin.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith('cells.') for k in missing)
    clip = torch.randn(1, 3, 3, 32, 48)
    with torch.no_grad():
        out = rec(clip)
        ref = torch.stack([twin(clip[:, t]) for t in range(clip.shape[1])], 1)
        _, state = rec.step(clip[:, 0])
    assert torch.allclose(out, ref, atol=1e-6)
    assert [tuple(s.shape[1:]) for s in state] == [(64, 8, 12), (128, 4, 6)]


def test_residual_cells_default_off():
    m = create_model('recurrent_unet', num_classes=3, size='small_shallow', temporal_cell='cgru')
    assert m.arch_config['residual_cells'] is False and not m.residual_cells
