"""TorchScript / ONNX exports match PyTorch and stream through the engine."""
import numpy as np
import pytest
import torch

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.tools.export import export_onnx, export_torchscript

pytest.importorskip('onnxruntime')
TOL = 1e-4
CASES = [('keyframe_fpn', {'width_mult': 0.25}), ('recurrent_unet', {'size': 'small_shallow', 'temporal_levels': 3}),
         ('truncated_fpn', {'width_mult': 0.25})]


@pytest.fixture(scope='module', params=CASES, ids=[c[0] for c in CASES])
def checkpoint(request, tmp_path_factory):
    return _checkpoint(*request.param, tmp_path_factory)


def _checkpoint(arch, kw, tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(arch, **kw)
    # non-trivial BN statistics so BN folding is exercised
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64) * 2 + 0.5)
    path = tmp_path_factory.mktemp(arch) / f'{arch}.pt'
    save_checkpoint(path, model, default_meta(arch, model.arch_config, input_hw=[64, 96],
                                              provenance={'trained': True}))
    return path


@pytest.fixture(scope='module')
def exported(checkpoint):
    """Both exports of the checkpoint, made once: {fmt: (path, report)}."""
    out = {}
    for fmt, fn in (('ts', export_torchscript), ('onnx', export_onnx)):
        path = checkpoint.with_suffix('.' + fmt)
        out[fmt] = (path, fn(checkpoint, path))
    return out


@pytest.mark.parametrize('fmt', ['ts', 'onnx'])
def test_export_parity_and_engine(checkpoint, exported, fmt):
    out, report = exported[fmt]
    assert report['max_abs_diff'] < TOL, report
    frames = [np.random.default_rng(i).integers(0, 255, (67, 101, 3), dtype=np.uint8) for i in range(4)]
    cfg = dict(device='cpu', keyframe_interval=2)
    ref = StreamSegmenter.from_checkpoint(EngineConfig(model=str(checkpoint), **cfg))
    exp = StreamSegmenter.from_checkpoint(EngineConfig(model=str(out), **cfg))
    assert exp.kind == ref.kind and exp.classes == ref.classes and exp.trained and exp.net_hw == ref.net_hw
    for i, img in enumerate(frames):
        a = ref.step(img, i * 33_000_000, want_confidence=True)
        b = exp.step(img, i * 33_000_000, want_confidence=True)
        assert a.is_key == b.is_key
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
        assert (a.class_ids == b.class_ids).mean() > 0.999


def test_commands_info_export_bench(tmp_path_factory, tmp_path):
    from vidseg_ros.tools.commands_models import bench, export, info
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)   # one architecture is enough for the plumbing
    meta = info(str(checkpoint))
    assert meta['arch'] == 'keyframe_fpn' and meta['kind'] == 'keyframe' and meta['trained'] and meta['parameters'] > 0
    report = export(str(checkpoint), tmp_path / 'm.onnx', 'onnx')
    assert report['max_abs_diff'] < TOL
    assert info(str(tmp_path / 'm.onnx'))['backend'] == 'onnx'
    with pytest.raises(ValueError, match='format'):
        export(str(checkpoint), tmp_path / 'm.x', 'tflite')
    b = bench(str(checkpoint), frames=4, device='cpu', image_hw=[67, 101])
    assert b['frames'] == 4 and b['key']['model'] is not None and b['image_hw'] == [67, 101]


@pytest.mark.parametrize('suffix', ['.ts', '.onnx'])
def test_bad_exported_files_give_clear_errors(tmp_path, suffix):
    from vidseg_ros.models.checkpoint import CheckpointError
    bad = tmp_path / f'bad{suffix}'
    bad.write_bytes(b'not a model at all')
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(bad), device='cpu'))
    with pytest.raises(CheckpointError, match='not found'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / f'none{suffix}'), device='cpu'))


@pytest.mark.parametrize('fmt', ['ts', 'onnx'])
def test_exported_graph_has_dynamic_size(checkpoint, exported, fmt):
    from vidseg_ros.engine.backends import open_exported
    from vidseg_ros.models.checkpoint import load_checkpoint
    from vidseg_ros.models.blocks import fuse_conv_bn
    from vidseg_ros.models.contract import stream_info
    from vidseg_ros.tools.export import exported_outputs, reference_outputs
    out = exported[fmt][0]
    model, _ = load_checkpoint(checkpoint)
    fuse_conv_bn(model)
    runner = open_exported(out, device='cpu')
    assert runner.info == stream_info(model)   # the file carries the model's StreamInfo
    x = torch.randn(1, 3, 96, 128)  # not the traced 64x96
    ref = reference_outputs(model, runner.kind, x)
    got = exported_outputs(runner, runner.kind, x)
    assert max(float((a - b).abs().max()) for a, b in zip(ref, got)) < TOL


def test_a_failed_export_leaves_an_earlier_good_file_as_it_was(tmp_path_factory, tmp_path, monkeypatch):
    from vidseg_ros.tools import export as export_module
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)      # key-frame: ONNX writes a pair of files
    good = tmp_path / 'good.onnx'
    export_onnx(checkpoint, good)
    pair = [good, tmp_path / 'good.current.onnx']
    before = [p.read_bytes() for p in pair]
    with pytest.raises(ValueError, match=r'torchscript exports are \.ts files'):
        export_torchscript(checkpoint, good)                       # `--format ts` with an .onnx name
    with pytest.raises(ValueError, match=r'onnx exports are \.onnx files'):
        export_onnx(checkpoint, tmp_path / 'm.txt')

    def broken(*args, **kwargs):
        raise RuntimeError('parity check failed')
    monkeypatch.setattr(export_module, 'parity', broken)
    with pytest.raises(RuntimeError, match='parity'):
        export_onnx(checkpoint, good)
    assert [p.read_bytes() for p in pair] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good.current.onnx', 'good.onnx']   # no half files


@pytest.mark.parametrize('error', [0.5, float('nan')])
def test_an_export_that_differs_from_pytorch_is_refused(tmp_path_factory, tmp_path, monkeypatch, error):
    """The parity check decides: a graph whose logits are off (an exporter bug, a wrong op) is not moved into
    place, and an earlier good file stays (before, the difference was only reported, and the file written)."""
    from vidseg_ros.tools import export as export_module
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)
    good = tmp_path / 'good.ts'
    export_torchscript(checkpoint, good)
    before = good.read_bytes()
    real = export_module.exported_outputs
    monkeypatch.setattr(export_module, 'exported_outputs',
                        lambda *a: [t + error for t in real(*a)])
    with pytest.raises(ValueError, match='differs from PyTorch by .* not written'):
        export_torchscript(checkpoint, good)
    assert good.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['good.ts']


def test_a_key_frame_pair_of_two_exports_is_refused(tmp_path_factory, tmp_path):
    """The key and current graphs are moved into place one after the other: an export killed between the two
    moves (or one file copied alone) left a pair of two exports, which ran with the wrong cache in silence."""
    from vidseg_ros.models.checkpoint import CheckpointError
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)
    export_onnx(checkpoint, tmp_path / 'a.onnx')
    export_onnx(checkpoint, tmp_path / 'b.onnx')
    StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / 'a.onnx'), device='cpu'))   # a pair
    (tmp_path / 'a.current.onnx').write_bytes((tmp_path / 'b.current.onnx').read_bytes())
    with pytest.raises(CheckpointError, match='two exports.*export the model again'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / 'a.onnx'), device='cpu'))


def test_bad_meta_is_refused_before_anything_is_written(tmp_path_factory, tmp_path):
    """A checkpoint whose meta is wrong exports nothing (it carried the wrong class table into the file, or
    tried to trace at 100000x100000); an input_hw override is held to the same bounds as the meta."""
    from vidseg_ros.models.checkpoint import CheckpointError
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)
    raw = torch.load(checkpoint, weights_only=True)
    for key, value, message in [('classes', ['a', 'b', 'c'], r'meta\.classes: 3 name\(s\)'),
                                ('input_hw', [100000, 100000], r'meta\.input_hw: 100000 is out of range'),
                                ('input_hw', '96x64', r'meta\.input_hw: expected a list'),
                                ('std', [0, 0, 0], r'meta\.std: 0\.0 is out of range')]:
        bad = tmp_path / f'{key}.pt'
        torch.save({**raw, 'meta': {**raw['meta'], key: value}}, bad)
        for fn, out in ((export_onnx, tmp_path / 'm.onnx'), (export_torchscript, tmp_path / 'm.ts')):
            with pytest.raises(CheckpointError, match=message):
                fn(bad, out)
    with pytest.raises(CheckpointError, match=r'input_hw override\): meta\.input_hw: 100000 is out of range'):
        export_torchscript(checkpoint, tmp_path / 'm.ts', input_hw=(100000, 100000))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f'{k}.pt' for k in ('classes', 'input_hw', 'std'))


def test_an_exported_file_with_bad_meta_is_refused_like_a_checkpoint(tmp_path_factory, tmp_path):
    """Exported files carried their meta into the engine unchecked: 3 class names for a model with 2 output
    channels, or a zero std, served wrong tables and NaN inputs."""
    import json

    import onnx
    from vidseg_ros.engine.backends import open_exported
    from vidseg_ros.engine.exported_checks import META_KEY
    from vidseg_ros.models.checkpoint import CheckpointError
    checkpoint = _checkpoint(*CASES[2], tmp_path_factory)
    path = tmp_path / 'm.onnx'
    export_onnx(checkpoint, path)
    open_exported(path, device='cpu')
    model = onnx.load(path)
    prop = next(p for p in model.metadata_props if p.key == META_KEY)
    info = json.loads(prop.value)
    for key, value, says in (('classes', info['meta']['classes'] + ['extra'], 'output channels'),
                             ('std', [0.0, 0.0, 0.0], 'meta.std')):
        prop.value = json.dumps({**info, 'meta': {**info['meta'], key: value}})
        onnx.save(model, tmp_path / 'bad.onnx')
        with pytest.raises(CheckpointError, match=says):
            open_exported(tmp_path / 'bad.onnx', device='cpu')


def test_a_torchscript_export_onto_a_full_disk_fails_in_one_line_and_leaves_nothing(tmp_path_factory, tmp_path):
    """torch.jit.save onto a full disk threw a C++ error that aborted the process (exit 134, 'terminate called
    after throwing an instance of c10::Error'), so the staged .m.partial.ts was never removed."""
    import os
    import resource
    import subprocess
    import sys

    from support.paths import ROOT
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)
    out = tmp_path / 'x' / 'm.ts'
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300 * 1024, resource.RLIM_INFINITY))  # noqa: E731
    result = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'export', str(checkpoint), str(out), '--format',
                             'ts'], capture_output=True, text=True, timeout=300, preexec_fn=limit,
                            env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr == f'vidseg export: error: {out}: File too large (not written; a file there before is ' \
                            'unchanged)\n'
    assert list(out.parent.iterdir()) == []


def test_the_longest_legal_export_name_is_written_and_a_key_frame_pair_too_long_refused_first(tmp_path_factory,
                                                                                               tmp_path):
    """A 255-byte .onnx name failed on its hidden '.<stem>.partial.onnx'; for a key-frame model its
    '<stem>.current.onnx' cannot be written at all: refused before anything is written."""
    import os
    limit = os.pathconf(tmp_path, 'PC_NAME_MAX')
    longest = tmp_path / ('a' * (limit - 5) + '.onnx')
    export_onnx(_checkpoint(*CASES[2], tmp_path_factory), longest)     # per-frame: one graph
    export_torchscript(_checkpoint(*CASES[0], tmp_path_factory), longest.with_suffix('.ts'))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([longest.name, longest.with_suffix('.ts').name])
    longest.unlink()
    longest.with_suffix('.ts').unlink()
    with pytest.raises(ValueError, match=rf'export: a key-frame model\'s ONNX export also writes <stem>.current.onnx, '
                                         rf'here {limit + 8} bytes, longer than its file system takes \({limit}\); '
                                         r'choose a name at least 8 bytes shorter'):
        export_onnx(_checkpoint(*CASES[0], tmp_path_factory), longest)
    with pytest.raises(ValueError, match=rf'export: the file name a+\.\.\. \({limit + 1} characters\) is '
                                         rf'{limit + 1} bytes, longer than its file system takes'):
        export_torchscript(_checkpoint(*CASES[0], tmp_path_factory), tmp_path / ('a' * (limit - 2) + '.ts'))
    assert list(tmp_path.iterdir()) == []


def test_a_tilde_in_the_export_path_is_the_home_folder(tmp_path_factory, tmp_path, monkeypatch):
    """'~/x.ts' (quoted, so the shell left it) made a folder named '~' in the current folder."""
    from vidseg_ros.tools.commands_models import export
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.chdir(tmp_path)
    report = export(str(_checkpoint(*CASES[2], tmp_path_factory)), '~/x.ts', format='ts')
    assert report['files'] == [str(tmp_path / 'home' / 'x.ts')] and (tmp_path / 'home' / 'x.ts').is_file()
    assert not (tmp_path / '~').exists()


def test_two_exports_to_one_target_at_once_both_succeed_and_leave_one_pair(tmp_path_factory, tmp_path):
    # they shared one staged file: each failed its parity check on the other's graph ("differs from PyTorch
    # by 0.5", or "... .partial.current.onnx is missing"), 2 runs of 3 in the hunt
    import subprocess
    import sys
    first = _checkpoint(*CASES[0], tmp_path_factory)
    second = _checkpoint(*CASES[0], tmp_path_factory)
    ckpt = torch.load(second, weights_only=True)
    ckpt['state_dict']['classifier.bias'] += 0.5        # another model, same shapes
    torch.save(ckpt, second)
    out = tmp_path / 'm.onnx'
    from vidseg_ros.tools.export import _staged_name
    assert _staged_name(out) != _staged_name(out)      # the race below is not won every time by the old code
    procs = [subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', 'export', str(c), str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in (first, second)]
    for p in procs:
        log = p.communicate(timeout=300)[0]
        assert p.returncode == 0, log
    StreamSegmenter.from_checkpoint(EngineConfig(model=str(out), device='cpu'))   # a pair of one export
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']


@pytest.mark.parametrize('fmt', ['ts', 'onnx'])
def test_an_exported_file_with_nan_weights_is_refused_at_load(tmp_path_factory, tmp_path, fmt):
    # export now refuses NaN weights, but files exported before that loaded and served class 0 everywhere
    from vidseg_ros.models.checkpoint import CheckpointError
    checkpoint = _checkpoint(*CASES[0], tmp_path_factory)
    out = tmp_path / f'm.{fmt}'
    (export_onnx if fmt == 'onnx' else export_torchscript)(checkpoint, out)
    if fmt == 'onnx':
        import onnx
        from onnx import numpy_helper
        model = onnx.load(str(out))
        init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
        bad = numpy_helper.to_array(init).copy()
        bad.flat[0] = np.nan
        init.CopyFrom(numpy_helper.from_array(bad, init.name))
        onnx.save(model, str(out))
    else:
        extra = {'vidseg_meta.json': ''}
        module = torch.jit.load(str(out), _extra_files=extra)
        with torch.no_grad():
            next(module.parameters()).view(-1)[0] = float('inf')
        torch.jit.save(module, str(out), _extra_files=extra)
    with pytest.raises(CheckpointError, match='NaN or inf.*diverged'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(out), device='cpu'))
