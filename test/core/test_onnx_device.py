"""The device rule for ONNX models: the torch rule's strings (meta, potato, cuda:x) are refused, not run on
CPU in silence; cuda depends on onnxruntime's CUDA provider, not on torch's build (Jetson: CPU torch beside
onnxruntime-gpu)."""
import pytest
import torch

from vidseg_ros.engine import devices
from vidseg_ros.engine.backends import open_exported
from vidseg_ros.engine.devices import check_onnx_device
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, default_meta, save_checkpoint
from vidseg_ros.ros.guards import check_device_for_model
from vidseg_ros.tools.export import export_onnx

ort = pytest.importorskip('onnxruntime')
CPU = ['CPUExecutionProvider']
GPU = ['CUDAExecutionProvider', 'CPUExecutionProvider']


@pytest.fixture(scope='module')
def onnx_model(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model('truncated_fpn', width_mult=0.25)
    ckpt = tmp_path_factory.mktemp('onnx') / 'm.pt'
    save_checkpoint(ckpt, model, default_meta('truncated_fpn', model.arch_config, input_hw=[64, 96],
                                              provenance={'trained': True}))
    export_onnx(ckpt, ckpt.with_suffix('.onnx'))
    return ckpt.with_suffix('.onnx')


@pytest.mark.parametrize('device, reason', [('meta', 'not supported'), ('potato', 'not a device'),
                                            ('cpu:1', 'not supported'), ('cuda:x', 'not a device')])
def test_onnx_model_refuses_what_torch_refuses(onnx_model, device, reason):
    with pytest.raises(ValueError, match=reason) as err:
        open_exported(onnx_model, device=device)
    assert not isinstance(err.value, CheckpointError)   # the setting's fault: not "re-export the file"


def test_onnx_cuda_without_the_cuda_provider_is_an_error_as_for_torch(onnx_model, monkeypatch):
    monkeypatch.setattr(ort, 'get_available_providers', lambda: list(CPU))
    with pytest.raises(ValueError, match='CUDAExecutionProvider'):
        open_exported(onnx_model, device='cuda')
    assert open_exported(onnx_model, device='auto').providers == CPU
    assert open_exported(onnx_model, device='cpu').providers == CPU


def test_onnx_cuda_needs_onnxruntimes_provider_not_a_cuda_torch(monkeypatch, onnx_model):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)   # a Jetson's CPU build of torch
    check_onnx_device('cuda', GPU)
    check_onnx_device('cuda:3', GPU)                                 # onnxruntime cannot count devices
    with pytest.raises(ValueError, match='CUDA is not available'):
        devices.check_device('cuda')                                # the torch rule is unchanged
    # the node's parameter check picks the rule by the model that will serve
    monkeypatch.setattr(ort, 'get_available_providers', lambda: list(GPU))
    check_device_for_model('cuda', str(onnx_model))
    with pytest.raises(ValueError, match='CUDA is not available'):
        check_device_for_model('cuda', 'untrained:keyframe_fpn')
    monkeypatch.setattr(ort, 'get_available_providers', lambda: list(CPU))
    with pytest.raises(ValueError, match='CUDAExecutionProvider'):
        check_device_for_model('cuda', str(onnx_model))
