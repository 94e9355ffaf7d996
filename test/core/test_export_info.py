"""`vidseg export --input-hw` and `vidseg info` on exported files: what a user deploying an export needs to know
(weights, stride, traced size, cache / state tensors, the key-frame pair), read from the file without running it."""
import json
import shutil
import sys

import pytest
import torch
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.models import create_model
from vidseg_ros.models.blocks import fuse_conv_bn
from vidseg_ros.models.checkpoint import default_meta, load_checkpoint, save_checkpoint

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')


def _vidseg(*args) -> dict:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _checkpoint(folder, arch, **kw):
    torch.manual_seed(0)
    model = create_model(arch, **kw)
    path = folder / f'{arch}.pt'
    save_checkpoint(path, model, default_meta(arch, model.arch_config, input_hw=[64, 96]))
    return path


@pytest.fixture(scope='module')
def keyframe(tmp_path_factory):
    """A key-frame model exported by the CLI at --input-hw 96x128 (not the checkpoint's 64x96) to ONNX and TS."""
    folder = tmp_path_factory.mktemp('kf')
    pt = _checkpoint(folder, 'keyframe_fpn', width_mult=0.25)
    reports = {fmt: _vidseg('export', pt, folder / f'm.{fmt}', '--format', fmt, '--input-hw', '96x128')
               for fmt in ('onnx', 'ts')}
    return pt, folder, reports


@pytest.fixture(scope='module')
def recurrent(tmp_path_factory):
    """A recurrent model exported to ONNX at --input-hw 100x100: not a multiple of its stride 8."""
    folder = tmp_path_factory.mktemp('rec')
    pt = _checkpoint(folder, 'recurrent_unet', size='small_shallow', temporal_levels=3)
    return pt, folder, _vidseg('export', pt, folder / 'r.onnx', '--input-hw', '100x100')


def _fused(pt):
    model, _ = load_checkpoint(pt)
    return fuse_conv_bn(model.eval()) or model


@torch.no_grad()
def _cache_shapes(pt, h, w):
    return [list(t.shape) for t in _fused(pt).forward_key(torch.zeros(1, 3, h, w))[1:]]


def test_export_takes_the_input_size_to_trace_at(keyframe, recurrent):
    """`vidseg export` had no --input-hw (the function behind it took one): the size is traced, padded up to a
    multiple of the stride, and reported."""
    _, _, reports = keyframe
    assert reports['onnx']['traced_hw'] == reports['ts']['traced_hw'] == [96, 128]
    assert reports['onnx']['max_abs_diff'] < 1e-4
    assert recurrent[2]['traced_hw'] == [104, 104]


@pytest.mark.parametrize('value, says', [
    ('0x5', "'0x5': expected HxW with positive integers"),
    ('abc', "'abc': expected HxW with positive integers"),
    ('480', "'480': expected HxW with positive integers"),
    ('4x4', 'input_hw: 4 is out of range 8..8192'),
    ('8x8193', 'input_hw: 8193 is out of range 8..8192'),
])
def test_a_bad_input_size_is_one_line_and_exit_2(tmp_path, value, says):
    pt = _checkpoint(tmp_path, 'truncated_fpn', width_mult=0.25)
    r = CliRunner().invoke(app, ['export', str(pt), str(tmp_path / 'm.onnx'), '--input-hw', value])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and 'Traceback' not in r.output, r.output
    assert not (tmp_path / 'm.onnx').exists()


def test_info_of_a_key_frame_onnx_export(keyframe):
    """`vidseg info m.onnx` printed "parameters": null and nothing about stride, traced size, cache or pair."""
    pt, folder, _ = keyframe
    got = _vidseg('info', folder / 'm.onnx')
    assert got['backend'] == 'onnx' and got['kind'] == 'keyframe' and len(got['classes']) == 11
    fused = sum(p.numel() for p in _fused(pt).parameters())
    assert isinstance(got['parameters'], int) and 0.9 * fused < got['parameters'] <= fused
    assert (got['stride'], got['output_stride']) == (32, 4)
    assert got['traced_hw'] == [96, 128] and got['input_hw'] == [64, 96]    # the engine's default stays
    assert list(got['state'].values()) == _cache_shapes(pt, 96, 128) and list(got['state']) == ['cache_0', 'cache_1']
    assert list(got['graphs']['key']['outputs']) == ['logits', 'cache_0', 'cache_1']
    assert list(got['graphs']['current']['inputs']) == ['image', 'cache_0', 'cache_1']
    assert got['graphs']['key']['inputs']['image'] == ['batch', 3, 'image_h', 'image_w']
    partner = got['partner']
    assert partner['file'] == str(folder / 'm.current.onnx') and partner['present'] and partner['same_export']
    assert got['notes'] == []


def test_info_of_a_key_frame_graph_without_its_partner_says_so(keyframe, tmp_path):
    """The engine refuses m.onnx without m.current.onnx; info describes it and says the partner is missing."""
    shutil.copy(keyframe[1] / 'm.onnx', tmp_path / 'm.onnx')
    got = _vidseg('info', tmp_path / 'm.onnx')
    assert got['partner'] == {'file': str(tmp_path / 'm.current.onnx'), 'present': False}
    assert any('m.current.onnx is missing' in n for n in got['notes']) and got['parameters'] > 0


def test_info_of_the_current_frame_graph_names_the_model_to_give(keyframe):
    folder = keyframe[1]
    got = _vidseg('info', folder / 'm.current.onnx')
    assert got['partner']['file'] == str(folder / 'm.onnx') and got['partner']['present']
    assert any('the model to give the engine is m.onnx' in n for n in got['notes'])


def test_info_of_a_torchscript_export(keyframe):
    pt, folder, _ = keyframe
    got = _vidseg('info', folder / 'm.ts')
    assert got['backend'] == 'torchscript' and got['partner'] is None
    assert got['parameters'] == sum(p.numel() for p in _fused(pt).parameters())    # BatchNorm folded
    assert got['traced_hw'] == [96, 128] and (got['stride'], got['output_stride']) == (32, 4)
    cache = _cache_shapes(pt, 96, 128)
    assert list(got['state'].values()) == cache
    assert got['graphs']['forward_current']['inputs'] == {'image': [1, 3, 96, 128], 'cache_0': cache[0],
                                                          'cache_1': cache[1]}
    assert got['graphs']['forward_key']['outputs']['logits'] == [1, 11, 24, 32]


@torch.no_grad()
def test_info_of_a_recurrent_onnx_export_lists_its_state(recurrent):
    pt, folder, _ = recurrent
    got = _vidseg('info', folder / 'r.onnx')
    state = [list(t.shape) for t in _fused(pt).forward_step(torch.zeros(1, 3, 104, 104))[1:]]
    assert got['kind'] == 'recurrent' and list(got['state'].values()) == state and got['partner'] is None
    assert list(got['graphs']['step']['inputs']) == ['image', 'state_0', 'state_1', 'state_2']
    assert list(got['graphs']['step']['outputs']) == ['logits', 'state_0_out', 'state_1_out', 'state_2_out']


def test_info_of_an_export_that_did_not_record_its_traced_size(keyframe, tmp_path):
    """Files exported before traced_hw / state_shapes were recorded: null and a note; the state's channels come
    from the graphs."""
    import onnx
    folder = keyframe[1]
    for name in ('m.onnx', 'm.current.onnx'):
        model = onnx.load(str(folder / name))
        prop = next(p for p in model.metadata_props if p.key == 'vidseg_meta')
        info = json.loads(prop.value)
        del info['traced_hw'], info['state_shapes']
        prop.value = json.dumps(info)
        onnx.save(model, str(tmp_path / name))
    got = _vidseg('info', tmp_path / 'm.onnx')
    assert got['traced_hw'] is None and any('not recorded' in n for n in got['notes'])
    assert got['state']['cache_0'] == ['batch', 64, 'cache_0_h', 'cache_0_w']


def test_info_without_the_onnx_package_uses_onnxruntime_and_says_what_is_missing(keyframe, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', None)      # `import onnx` fails as where it is not installed
    got = _vidseg('info', keyframe[1] / 'm.onnx')
    assert got['parameters'] is None and any('pip install onnx' in n for n in got['notes'])
    assert got['traced_hw'] == [96, 128] and got['partner']['present'] and got['partner']['same_export']
    assert list(got['graphs']['key']['outputs']) == ['logits', 'cache_0', 'cache_1']


def test_info_without_onnx_or_onnxruntime_is_one_line(keyframe, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', None)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    r = CliRunner().invoke(app, ['info', str(keyframe[1] / 'm.onnx')])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and 'needs the onnx package: pip install onnx' in lines[0], r.output
