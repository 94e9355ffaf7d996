"""A model whose weights are finite but whose output is NaN or inf (here: every bias 1e38, which overflows) is
refused when the engine loads it, also where no input size is known (none in its file or the settings): the
node warms up only at a known size, so such a model loaded and then failed on every frame."""
import pytest
import torch
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.engine.base import EngineConfig, NonFiniteOutput
from vidseg_ros.engine.stream import LOAD_CHECK_SIDE, StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint

ARCHS = {'truncated_fpn': {'width_mult': 0.25}, 'keyframe_fpn': {'width_mult': 0.25}, 'recurrent_unet': {}}


def _saved(path, arch: str, input_hw=(), overflow: bool = False):
    torch.manual_seed(0)
    model = create_model(arch, **ARCHS[arch])
    if overflow:
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if name.endswith('.bias') and value.dim() == 1:
                    value.fill_(1e38)     # finite: every reader's check_finite passes it
    return save_checkpoint(path, model, default_meta(arch, model.arch_config, input_hw=input_hw))


@pytest.mark.parametrize('arch', list(ARCHS))
def test_a_model_that_gives_nan_is_refused_at_load_with_no_input_size(tmp_path, arch):
    path = _saved(tmp_path / 'nan.pt', arch, overflow=True)
    with pytest.raises(NonFiniteOutput, match=r'gives NaN or inf on a blank \d+x\d+ frame at load'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu'))


def test_the_cli_says_so_in_one_line(tmp_path):
    path = _saved(tmp_path / 'nan.pt', 'truncated_fpn', overflow=True)
    r = CliRunner().invoke(app, ['bench', str(path), '--frames', '1', '--device', 'cpu'])
    assert r.exit_code == 2, r.output
    line, = r.stderr.strip().splitlines()
    assert 'gives NaN or inf on a blank 64x64 frame at load' in line, line


@pytest.mark.parametrize('arch', list(ARCHS))
def test_the_check_costs_one_small_frame_and_leaves_the_engine_as_loaded(tmp_path, arch, monkeypatch):
    """One network call (a key frame, or a step from zero state) on a side of LOAD_CHECK_SIDE rounded up to a
    multiple of the stride; none where the input size is known (the node's warm-up runs there)."""
    calls = []
    model_cls = type(create_model(arch, **ARCHS[arch]))
    for method in ('forward_key', 'forward_step', 'forward_current'):
        if (original := getattr(model_cls, method, None)) is None:
            continue
        monkeypatch.setattr(model_cls, method, lambda self, x, *rest, _f=original, _m=method: (
            calls.append((_m, tuple(x.shape[-2:]))), _f(self, x, *rest))[1])
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(_saved(tmp_path / 'm.pt', arch)), device='cpu'))
    side = -(-LOAD_CHECK_SIDE // engine.stride) * engine.stride
    assert side % engine.stride == 0 and side <= max(LOAD_CHECK_SIDE, engine.stride)
    entry = 'forward_key' if engine.kind == 'keyframe' else 'forward_step'
    assert calls == [(entry, (side, side))], calls
    assert engine.net_hw == (0, 0)
    assert engine.step(torch.zeros(40, 56, 3, dtype=torch.uint8).numpy(), 0).key_reason == 'start'
    calls.clear()
    StreamSegmenter.from_checkpoint(EngineConfig(model=str(_saved(tmp_path / 'hw.pt', arch, input_hw=(64, 64))),
                                                 device='cpu'))
    assert calls == []


def test_the_check_runs_the_model_eagerly_not_its_compiled_entry_points(tmp_path, monkeypatch):
    """compile=True: a compile for the check's size took about 90 s on a CPU (and cuda_graphs would capture a graph
    for it); the check runs the model as it is."""
    def compiled(fn, **kw):
        return lambda *a, **k: pytest.fail('the load check ran a compiled entry point')
    monkeypatch.setattr(torch, 'compile', compiled)
    path = _saved(tmp_path / 'nan.pt', 'keyframe_fpn', overflow=True)
    with pytest.raises(NonFiniteOutput, match='at load'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu', compile=True))


@pytest.mark.parametrize('arch', ['keyframe_fpn', 'recurrent_unet'])
def test_exported_models_are_checked_too(tmp_path, arch):
    """TorchScript (eager methods) and ONNX (its sessions): a healthy export with no input size loads and serves;
    an ONNX graph whose biases overflow is refused at load."""
    pytest.importorskip('onnx')
    import onnx
    from onnx import numpy_helper
    from vidseg_ros.tools.export import export_onnx, export_torchscript
    path = _saved(tmp_path / 'm.pt', arch)
    export_torchscript(path, tmp_path / 'm.ts', (64, 64))
    export_onnx(path, tmp_path / 'm.onnx', (64, 64))
    for name in ('m.ts', 'm.onnx'):
        engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / name), device='cpu'))
        assert engine.net_hw == (0, 0)
        assert engine.step(torch.zeros(40, 56, 3, dtype=torch.uint8).numpy(), 0).class_ids.shape == (40, 56)
    for graph in ['m.onnx'] + (['m.current.onnx'] if arch == 'keyframe_fpn' else []):
        model = onnx.load(str(tmp_path / graph))
        for init in model.graph.initializer:
            if len(init.dims) == 1 and init.data_type == onnx.TensorProto.FLOAT:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0 + 1e38, init.name))
        onnx.save(model, str(tmp_path / graph))
    with pytest.raises(NonFiniteOutput, match='at load'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / 'm.onnx'), device='cpu'))


def test_eval_checks_at_load_too(tmp_path):
    """`vidseg eval` builds its engine from the checkpoint it read itself (not from_checkpoint): it failed on the
    first frame, after opening the data, instead of at load."""
    import numpy as np

    from support.eval_data import folder_dataset, noise_images
    path = _saved(tmp_path / 'nan.pt', 'truncated_fpn', overflow=True)
    labels = [np.zeros((32, 32), np.uint8)] * 2
    data = folder_dataset(tmp_path / 'd', noise_images(labels), labels, classes=None)
    r = CliRunner().invoke(app, ['eval', str(path), str(data), '--split', 'all', '--out-dir', str(tmp_path / 'ev')])
    assert r.exit_code == 2, r.output
    line, = r.stderr.strip().splitlines()
    assert 'gives NaN or inf on a blank 64x64 frame at load' in line, line
