"""A checkpoint written by the training loop exports to TorchScript and ONNX with parity."""
import pytest
import torch

from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.loop import train

HW = [64, 64]


def _items(n=4):
    g = torch.Generator().manual_seed(0)
    return [{'image': torch.rand(3, *HW, generator=g), 'label': torch.randint(0, 3, HW, generator=g)}
            for _ in range(n)]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch of the real key-frame FPN (2 cached levels), recurrent UNet and recurrent FPN, tiny data."""
    from vidseg_ros.models import create_model
    root = tmp_path_factory.mktemp('export')
    out = {}
    for name, arch, kw in (('kf', 'keyframe_fpn', {'cached_levels': 2}),
                           ('unet', 'recurrent_unet', {'size': 'small_shallow', 'temporal_cell': 'cgru'}),
                           ('rfpn', 'recurrent_fpn', {'width_mult': 0.5})):
        cfg = TrainConfig(name=name, arch=arch, arch_config=kw, dataset='folder', num_classes=3,
                          ignore_index=255, input_hw=HW, batch_size=2, epochs=1, val_split='',
                          runs_dir=str(root), output=str(root / f'{name}.pt'))
        train(cfg, model=create_model(arch, num_classes=3, **kw), train_set=_items())
        out[name] = root / f'{name}.pt'
    return out


@pytest.mark.parametrize('name', ['kf', 'unet', 'rfpn'])
@pytest.mark.parametrize('fmt', ['torchscript', 'onnx'])
def test_export_parity(trained, tmp_path, name, fmt):
    export = pytest.importorskip('vidseg_ros.tools.export')
    if fmt == 'onnx':
        pytest.importorskip('onnxruntime')
        report = export.export_onnx(trained[name], tmp_path / f'{name}.onnx', input_hw=tuple(HW))
    else:
        report = export.export_torchscript(trained[name], tmp_path / f'{name}.ts', input_hw=tuple(HW))
    assert report['max_abs_diff'] < 1e-3


def test_checkpoint_meta_complete(trained):
    from vidseg_ros.models.checkpoint import load_checkpoint
    model, meta = load_checkpoint(trained['kf'])
    assert meta['provenance']['trained'] is True
    assert meta['train_config']['arch'] == 'keyframe_fpn' and meta['input_hw'] == HW
    assert meta['arch_config']['cached_levels'] == 2 and model.cached_levels == 2
    assert 'licence' in meta['provenance']


def test_halved_checkpoint_loads_and_predicts_the_same(trained, tmp_path):
    from vidseg_ros.models.checkpoint import load_checkpoint
    from vidseg_ros.training.checkpoint_meta import halve_checkpoint
    sizes = halve_checkpoint(trained['kf'], tmp_path / 'half.pt')
    assert sizes['bytes_after'] < 0.6 * sizes['bytes_before']
    full, _ = load_checkpoint(trained['kf'])
    half, meta = load_checkpoint(tmp_path / 'half.pt')
    assert meta['weights_dtype'] == 'float16' and next(half.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, *HW)
    with torch.no_grad():
        assert (full(x) - half(x)).abs().max() < 1e-2
