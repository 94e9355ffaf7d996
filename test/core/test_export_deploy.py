"""Exported files as users deploy them: moved, renamed, mixed up or someone else's, each refused in one line
that names the file and says what to do (the runtimes' own errors named neither)."""
import pytest
import torch

from vidseg_ros.engine.backends import open_exported
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, default_meta, save_checkpoint
from vidseg_ros.tools.export import export_onnx, export_torchscript

pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """A tiny 2-class key-frame model's checkpoint and its exports: {'pt', 'onnx', 'current', 'ts'} -> bytes."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, width_mult=0.25, fpn_ch=16)
    folder = tmp_path_factory.mktemp('deploy')
    pt = folder / 'm.pt'
    save_checkpoint(pt, model, default_meta('keyframe_fpn', model.arch_config, classes=['bg', 'robot'],
                                            palette=[[0, 0, 0], [255, 0, 0]], ignore_index=None, input_hw=[64, 64]))
    export_onnx(pt, folder / 'm.onnx')
    export_torchscript(pt, folder / 'm.ts')
    return {'pt': pt, **{k: (folder / name).read_bytes()
                         for k, name in (('onnx', 'm.onnx'), ('current', 'm.current.onnx'), ('ts', 'm.ts'))}}


def _put(folder, **files):
    for name, data in files.items():
        (folder / name.replace('__', '.')).write_bytes(data)


def _refused(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        open_exported(path, device='cpu')
    message = str(e.value)
    assert '\n' not in message and message.count('vidseg export') <= 1, message
    # the node logs load errors clipped to 200 characters: the advice must fit beside a path of 70
    assert len(message.replace(str(path.parent) + '/', '')) <= 130, message
    return message


def test_the_current_frame_graph_given_as_the_model_names_its_key_frame_graph(exports, tmp_path):
    """model:=m.current.onnx loaded (it carries the same metadata) and then looked for m.current.current.onnx."""
    _put(tmp_path, m__onnx=exports['onnx'], m__current__onnx=exports['current'])
    open_exported(tmp_path / 'm.onnx', device='cpu')
    _refused(tmp_path / 'm.current.onnx', r'current-frame half of a key-frame ONNX pair: give m\.onnx as the model')


def test_a_key_frame_graph_moved_without_its_partner_says_the_pair_moves_together(exports, tmp_path):
    _put(tmp_path, moved__onnx=exports['onnx'], m__current__onnx=exports['current'])   # renamed one file only
    _refused(tmp_path / 'moved.onnx', r'moved\.onnx: its key-frame pair moved\.current\.onnx is not beside it \(move '
                                      r'and rename X\.onnx and X\.current\.onnx together\)')


def test_a_pair_of_two_exports_is_one_line_without_the_loaders_wrapping(exports, tmp_path):
    other = tmp_path / 'other'
    other.mkdir()
    export_onnx(exports['pt'], other / 'm.onnx')
    _put(tmp_path, m__onnx=exports['onnx'], m__current__onnx=(other / 'm.current.onnx').read_bytes())
    message = _refused(tmp_path / 'm.onnx', 'come from two exports')
    assert 'cannot load this exported model' not in message


def test_someone_elses_onnx_or_torchscript_model_is_not_ours_in_one_line(tmp_path):
    """A model without our metadata is no vidseg export: 're-export it' was the wrong advice (twice)."""
    import warnings
    net = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (x,), str(tmp_path / 'theirs.onnx'), dynamo=False)
        torch.jit.save(torch.jit.trace(net, x), str(tmp_path / 'theirs.ts'))
    for name in ('theirs.onnx', 'theirs.ts'):
        message = _refused(tmp_path / name, r'has no vidseg_ros metadata .*: not written by `vidseg export`')
        assert message.count(name) == 1, message


@pytest.mark.parametrize('name, source, cut, match', [
    ('m.onnx', 'ts', None, r'm\.onnx is a PyTorch archive \(TorchScript or checkpoint\), not ONNX: name it m\.ts '
                           r'or m\.pt'),
    ('m.onnx', 'pt', None, r'not ONNX: name it m\.ts or m\.pt'),
    ('m.ts', 'onnx', None, r'm\.ts is not a \(complete\) TorchScript archive; it looks like an ONNX model: name it '
                           r'm\.onnx'),
    ('m.ts', 'ts', 5000, r'm\.ts is not a \(complete\) TorchScript archive: truncated or corrupt; re-copy'),
    ('m.onnx', 'onnx', 5000, r'm\.onnx is not a complete ONNX model \(truncated or corrupt\)'),
    ('m.onnx', 'current', 5000, r'm\.current\.onnx is not a complete ONNX model \(truncated or corrupt\)'),
])
def test_a_file_whose_bytes_are_not_its_suffix_or_cut_short_says_so(exports, tmp_path, name, source, cut, match):
    """The runtimes said 'INVALID_PROTOBUF : ... Protobuf parsing failed' or 'failed finding central directory.
    This is an internal miniz error. If you are seeing...' clipped mid-sentence, under 'cannot load'."""
    data = exports[source].read_bytes() if source == 'pt' else exports[source]
    _put(tmp_path, m__onnx=exports['onnx'], m__current__onnx=exports['current'])
    if source == 'current':     # the key-frame graph is whole; its partner is cut short
        _put(tmp_path, m__current__onnx=data[:cut])
    else:
        (tmp_path / name).write_bytes(data[:cut] if cut else data)
    message = _refused(tmp_path / name, match)
    assert 'cannot load this exported model' not in message


def test_an_export_named_like_a_current_frame_graph_is_refused_before_anything_is_written(exports, tmp_path):
    """`vidseg export m.pt m.current.onnx` replaced the partner of m.onnx beside it: that pair was broken."""
    _put(tmp_path, m__onnx=exports['onnx'], m__current__onnx=exports['current'])
    with pytest.raises(ValueError, match=r'names ending in \.current\.onnx are the second graph .*e\.g\. m\.onnx'):
        export_onnx(exports['pt'], tmp_path / 'm.current.onnx')
    assert (tmp_path / 'm.current.onnx').read_bytes() == exports['current']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']
    open_exported(tmp_path / 'm.onnx', device='cpu')


def test_an_onnx_export_renamed_pt_is_named_as_one(exports, tmp_path):
    """Torch said only 'Unsupported operand 8' (the ONNX file's first byte) of a .onnx renamed .pt."""
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    _put(tmp_path, m__pt=exports['onnx'])
    with pytest.raises(CheckpointError, match=r'm\.pt is not a loadable torch checkpoint .*; it looks like an ONNX '
                                              r'export: name it m\.onnx'):
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / 'm.pt'), device='cpu'))
