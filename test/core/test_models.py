"""Every architecture x block x temporal cell builds, runs forward and backward at 64x64."""
import pytest
import torch

from vidseg_ros.models import BLOCKS, MODELS, create_model
from vidseg_ros.models.recurrent_unet import SIZES, TEMPORAL_CELLS

CASES = (
    [('keyframe_fpn', {'block': b, 'cached_levels': k}) for b in BLOCKS for k in (0, 1, 2)]
    + [('keyframe_fpn', {'backbone': bb, 'width_mult': 0.25}) for bb in ('resnet18', 'resnet34', 'densenet121')]
    + [('truncated_fpn', {'removed_levels': r, 'block': b}) for r in (1, 2) for b in BLOCKS]
    + [('recurrent_unet', {'block': b, 'temporal_cell': c, 'size': s})
       for b in BLOCKS for c in TEMPORAL_CELLS for s in ('small_shallow', 'small_deep')]
    + [('recurrent_unet', {'size': 'original', 'temporal_cell': 'cgru'}),
       ('recurrent_unet', {'size': 'small_deep', 'temporal_cell': 'cgru', 'temporal_levels': 2})]
    + [('recurrent_fpn', {'block': b, 'temporal_cell': c, 'width_mult': 0.5}) for b in BLOCKS for c in TEMPORAL_CELLS]
)


@pytest.mark.parametrize('name,kw', CASES, ids=[f'{n}-{"-".join(map(str, k.values()))}' for n, k in CASES])
def test_forward_backward(name, kw):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **kw)
    x = torch.randn(1, 3, 64, 64)
    y = model(x)
    assert y.shape == (1, 5, 64, 64)
    y.mean().backward()
    n_params = sum(p.numel() for p in model.parameters())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    print(f'{name} {kw}: {n_params / 1e6:.3f} M parameters')


def test_registry_errors_and_config():
    with pytest.raises(ValueError, match='valid models: keyframe_fpn, recurrent_fpn, recurrent_unet, truncated_fpn'):
        create_model('nope')
    with pytest.raises(ValueError, match='valid blocks'):
        create_model('recurrent_unet', block='dense')
    with pytest.raises(TypeError, match='valid arguments'):
        create_model('keyframe_fpn', colour='red')
    m = create_model('keyframe_fpn', num_classes=3)
    assert m.arch == 'keyframe_fpn' and m.arch_config['num_classes'] == 3
    assert m.arch_config['cached_levels'] == 2  # defaults are recorded for checkpoints
    assert set(MODELS) >= {'keyframe_fpn', 'recurrent_fpn', 'recurrent_unet', 'truncated_fpn'}
    assert set(SIZES) == {'original', 'small_shallow', 'small_deep'}


def test_encoder_reports_shapes():
    from vidseg_ros.models.encoder import BACKBONES, create_encoder
    for name in BACKBONES:
        enc = create_encoder(name, width_mult=0.25)
        feats = enc(torch.randn(1, 3, 64, 64))
        assert tuple(f.shape[1] for f in feats) == enc.out_channels
        assert tuple(64 // f.shape[-1] for f in feats) == enc.strides == (4, 8, 16, 32)


def test_input_size_check_suggests_padding():
    model = create_model('keyframe_fpn').eval()
    with pytest.raises(ValueError, match='pad it to 96x96'):
        model(torch.randn(1, 3, 70, 90))


@pytest.mark.parametrize('cached_levels', [1, 2])
def test_cached_current_frame_equals_full_model(cached_levels):
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', cached_levels=cached_levels).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        logits_key, *cache = model.forward_key(x)
        current = model.forward_current(x, *cache)
        full = model(x)
    torch.testing.assert_close(current, logits_key)
    torch.testing.assert_close(torch.nn.functional.interpolate(current, size=(64, 96), mode='bilinear'), full)
    # the cache depends on the key frame only: another frame's current output differs
    with torch.no_grad():
        other = model.forward_current(torch.randn(1, 3, 64, 96), *cache)
    assert not torch.allclose(other, current)


def test_truncated_fpn_is_the_low_path():
    full = create_model('keyframe_fpn')
    trunc = create_model('truncated_fpn', removed_levels=2)
    assert trunc.stride == 8 and len(trunc.encoder.stages) == 2
    assert sum(p.numel() for p in trunc.parameters()) < sum(p.numel() for p in full.parameters()) / 5


@pytest.mark.parametrize('cell,levels', [('crnn', 0), ('cgru', 0), ('none', 0), ('cgru', 2)])
def test_recurrent_streaming_equals_clip(cell, levels):
    torch.manual_seed(0)
    model = create_model('recurrent_unet', size='small_shallow', temporal_cell=cell, temporal_levels=levels,
                         num_classes=4).eval()
    clip = torch.randn(2, 3, 3, 16, 24)
    with torch.no_grad():
        out_clip = model(clip)
        state = model.init_state(2, 16, 24)
        steps = []
        for t in range(clip.shape[1]):
            logits, state = model.step(clip[:, t], state)
            steps.append(logits)
    assert out_clip.shape == (2, 3, 4, 16, 24)
    torch.testing.assert_close(torch.stack(steps, 1), out_clip)
    assert all(isinstance(s, torch.Tensor) for s in state)
    assert len(state) == (0 if cell == 'none' else levels or 4)
    assert [tuple(t.shape[1:]) for t in state] == [(c, 16 // f, 24 // f) for c, f in model.state_layout()]


def test_recurrent_state_matters():
    torch.manual_seed(0)
    model = create_model('recurrent_unet', size='small_shallow', temporal_cell='cgru').eval()
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fresh, _ = model.step(b, None)
        _, state = model.step(a, None)
        after_a, _ = model.step(b, state)
    assert not torch.allclose(fresh, after_a)


def test_set_cached_levels_keeps_weights_and_output():
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', cached_levels=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.set_cached_levels(2)
        key, *cache = model.forward_key(x)
        assert len(cache) == 2 and model.arch_config['cached_levels'] == 2
        torch.testing.assert_close(model(x), ref)
        torch.testing.assert_close(model.forward_current(x, *cache), key)
    with pytest.raises(ValueError):
        model.set_cached_levels(3)


def test_pretrained_is_opt_in_and_explains_itself():
    import importlib.util
    assert create_model('keyframe_fpn').arch_config['pretrained'] is False  # never downloads by default
    with pytest.raises(ValueError, match='pretrained=True only applies'):
        create_model('keyframe_fpn', backbone='light', pretrained=True)
    if importlib.util.find_spec('timm') is None:
        with pytest.raises(ImportError, match='needs timm'):
            create_model('keyframe_fpn', backbone='resnet18', pretrained=True)
