"""Model files crafted by a careless user or an attacker, through the loaders the node uses
(``StreamSegmenter.from_checkpoint``: ``load_checkpoint``, ``open_exported``) and ``vidseg info``: each is refused
with one clear line, before it can run code, read a file outside its folder or allocate what its size does not
account for."""
import copy
import io
import os
import zipfile

import pytest
import torch
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, default_meta, load_checkpoint, save_checkpoint


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """A tiny 2-class key-frame checkpoint's path."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, width_mult=0.25, fpn_ch=16)
    path = tmp_path_factory.mktemp('crafted') / 'kf.pt'
    save_checkpoint(path, model, default_meta('keyframe_fpn', model.arch_config, classes=['bg', 'robot'],
                                              palette=[[0, 0, 0], [255, 0, 0]], ignore_index=None,
                                              input_hw=[64, 64]))
    return path


@pytest.fixture(scope='module')
def raw(saved):
    """That checkpoint as torch.load returns it."""
    return torch.load(saved, weights_only=True)


@pytest.fixture(scope='module')
def exported(saved):
    """Its TorchScript export's path."""
    from vidseg_ros.tools.export import export_torchscript
    export_torchscript(saved, saved.with_suffix('.ts'))
    return saved.with_suffix('.ts')


def _deflated(data: bytes, path, extra: dict | None = None):
    """The zip archive ``data`` rewritten to ``path`` with every record deflated (and ``extra`` records added)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as zout:
        prefix = zin.namelist()[0].split('/')[0]
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        for name, value in (extra or {}).items():
            zout.writestr(f'{prefix}/{name}', value)
    return path


def _variant(raw, path, **arch_config):
    data = copy.deepcopy(raw)
    data['meta']['arch_config'].update(arch_config)
    torch.save(data, path)
    return path


def _info_error(path) -> str:
    """`vidseg info` of ``path``: its one-line error (exit 2, no traceback)."""
    r = CliRunner().invoke(app, ['info', str(path)])
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    return lines[0]


def _engine_error(path) -> str:
    """The error the node's loader gives for ``path`` (a CheckpointError, never another type)."""
    with pytest.raises(CheckpointError) as e:
        StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu'))
    assert '\n' not in str(e.value), str(e.value)
    return str(e.value)


# ---- .pt ----------------------------------------------------------------------------------------------
def test_a_pickled_call_of_a_blocked_module_is_named_as_code_weights_only_refuses(raw, tmp_path):
    """torch's refusal of ``os.system`` (a module it blocks) has no 'WeightsUnpickler error:' part: the reason
    was the bare 'UnpicklingError', and the message did not say the file holds code."""
    class Evil:
        def __reduce__(self):
            return os.system, ('echo never-run',)
    data = copy.deepcopy(raw)
    data['meta']['provenance']['x'] = Evil()
    path = tmp_path / 'evil.pt'
    torch.save(data, path)
    for message in (_engine_error(path), _info_error(path)):
        assert 'Python objects that weights_only loading refuses' in message, message
        assert 'GLOBAL posix.system' in message and 'weights_only` set to `False' not in message, message


def test_a_small_checkpoint_that_inflates_to_gigabytes_is_refused_before_it_is_read(raw, tmp_path):
    """torch.load inflates deflated records: a 3 MB file holding a deflated 2 GiB zero tensor took 6 GB of memory
    in `vidseg info` (and was then served: an extra tensor is refused only by the engine). Here 48 MiB in 50 kB."""
    data = copy.deepcopy(raw)
    data['state_dict']['padding'] = torch.zeros(12 << 20)
    buf = io.BytesIO()
    torch.save(data, buf)
    path = _deflated(buf.getvalue(), tmp_path / 'bomb.pt')
    assert path.stat().st_size < 1 << 20
    for message in (_engine_error(path), _info_error(path)):
        assert 'expand to' in message and 'compressed' in message, message


def test_a_torchscript_archive_that_inflates_beyond_its_size_is_refused(exported, tmp_path):
    path = _deflated(exported.read_bytes(), tmp_path / 'bomb.ts', {'extra/padding': bytes(48 << 20)})
    for message in (_engine_error(path), _info_error(path)):
        assert 'expand to' in message, message


def test_a_deflated_archive_of_its_own_size_still_loads(exported, saved, tmp_path):
    """Compression alone is no reason to refuse: only records that expand beyond the file's size."""
    load_checkpoint(_deflated(saved.read_bytes(), tmp_path / 'deflated.pt'))
    StreamSegmenter.from_checkpoint(EngineConfig(model=str(_deflated(exported.read_bytes(), tmp_path / 'd.ts')),
                                                 device='cpu'))


@pytest.mark.parametrize('arch_config', [{'fpn_ch': 10 ** 6}, {'width_mult': 1000.0}])
def test_an_arch_config_far_larger_than_the_file_s_weights_is_refused_before_it_is_built(raw, tmp_path,
                                                                                        arch_config):
    """The model was built before its weights were compared: fpn_ch 10**6 asked for 36 TB (RuntimeError; `vidseg
    info`: 'internal error', exit 1), width_mult 1000 for 9 GB, which a large machine hands out (or swaps)."""
    path = _variant(raw, tmp_path / 'huge.pt', **arch_config)
    for message in (_engine_error(path), _info_error(path)):
        assert 'state_dict does not match keyframe_fpn' in message and 'vs model' in message, message


@pytest.mark.parametrize('change, says', [
    (lambda sd, k: sd.__setitem__(k, 'weights'), "maps 'encoder.stem.0.0.weight' to a str"),
    (lambda sd, k: sd.__setitem__(3, sd[k]), 'maps 3 to a Tensor'),
    (lambda sd, k: sd.__setitem__(k, sd[k].to(torch.complex64)), 'file torch.complex64 vs model torch.float32'),
    (lambda sd, k: sd.__setitem__(k, sd[k].to(torch.int64)), 'file torch.int64 vs model torch.float32'),
])
def test_a_state_dict_of_other_things_than_matching_tensors_is_refused(raw, tmp_path, change, says):
    """A str failed as AttributeError and an int key as TypeError (neither a CheckpointError: the CLI called them
    internal errors); complex and integer weights were cast by load_state_dict and served."""
    data = copy.deepcopy(raw)
    change(data['state_dict'], 'encoder.stem.0.0.weight')
    path = tmp_path / 'odd.pt'
    torch.save(data, path)
    for message in (_engine_error(path), _info_error(path)):
        assert says in message, message


def test_info_refuses_a_checkpoint_whose_weights_the_engine_refuses(raw, tmp_path):
    """`vidseg info` built the model but never compared the file's tensors with it: a checkpoint missing a
    weight was described (exit 0) and then refused by the node."""
    data = copy.deepcopy(raw)
    del data['state_dict']['classifier.weight']
    path = tmp_path / 'missing.pt'
    torch.save(data, path)
    assert 'missing key(s), first: classifier.weight' in _info_error(path)


# ---- ONNX ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def recurrent_onnx(tmp_path_factory):
    """A small recurrent model's ONNX export (image, 3 states -> logits, 3 states): {'path', 'bytes'}."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    from vidseg_ros.tools.export import export_onnx
    torch.manual_seed(0)
    model = create_model('recurrent_unet', num_classes=2, size='small_shallow', temporal_levels=3)
    folder = tmp_path_factory.mktemp('onnx')
    save_checkpoint(folder / 'r.pt', model, default_meta('recurrent_unet', model.arch_config, classes=['bg', 'fg'],
                                                         palette=[[0, 0, 0], [9, 9, 9]], input_hw=[64, 64]))
    export_onnx(folder / 'r.pt', folder / 'r.onnx')
    return folder / 'r.onnx'


def _edited(src, dst, graph=None, meta=None):
    """``src`` written to ``dst`` with ``graph(model)`` applied and its vidseg_meta JSON replaced by ``meta(info)``
    (a dict, or the text itself)."""
    import json

    import onnx
    model = onnx.load(str(src))
    if graph:
        graph(model)
    if meta:
        entry = next(p for p in model.metadata_props if p.key == 'vidseg_meta')
        value = meta(json.loads(entry.value))
        entry.value = value if isinstance(value, str) else json.dumps(value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def _external(model, location, length=None):
    """The largest weight of ``model`` moved to external data at ``location`` (the bytes are returned)."""
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    data = weight.raw_data
    weight.ClearField('raw_data')
    weight.data_location = 1     # EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = 'location', location
    if length is not None:
        entry = weight.external_data.add()
        entry.key, entry.value = 'length', str(length)
    return data


@pytest.mark.parametrize('where', ['absolute', 'dotdot', 'link', 'loop'])
def test_external_weights_outside_the_model_s_folder_are_refused_unread(recurrent_onnx, tmp_path, where):
    """Path traversal: a weight whose data 'lie' in /abs/secret, ../../secret or a link out of the folder. `vidseg
    info` described such a file (exit 0) and onnxruntime refused it in a clipped C++ message."""
    secret = tmp_path / 'secret.bin'
    secret.write_bytes(bytes(4 << 20))
    model_dir = tmp_path / 'models' / 'sub'
    model_dir.mkdir(parents=True)
    if where == 'link':
        (model_dir / 'w.bin').symlink_to(secret)
    if where == 'loop':
        (model_dir / 'w.bin').symlink_to('x.bin')
        (model_dir / 'x.bin').symlink_to('w.bin')
    location = {'absolute': str(secret), 'dotdot': '../../secret.bin'}.get(where, 'w.bin')
    path = _edited(recurrent_onnx, model_dir / 'm.onnx', graph=lambda m: _external(m, location))
    for message in (_engine_error(path), _info_error(path)):
        assert "outside the model's folder: not read" in message, message


@pytest.mark.parametrize('case, says', [('missing', 'which is missing'), ('short', 'truncated'),
                                        ('length', 'truncated or not its data'), ('fifo', 'not a regular file')])
def test_external_weights_missing_or_short_are_one_line(recurrent_onnx, tmp_path, case, says):
    """onnxruntime's refusal printed its own coloured ERROR log line beside ours, and ours was clipped in C++
    source lines ('/onnxruntime_src/.../initializer.cc:79 onnxruntime::Initializer::Initializer(const ...')."""
    holder = {}
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', graph=lambda m: holder.setdefault(
        'data', _external(m, 'w.bin', length=10 ** 12 if case == 'length' else None)))
    if case in ('short', 'length'):
        (tmp_path / 'w.bin').write_bytes(holder['data'][:len(holder['data']) // (2 if case == 'short' else 1)])
    if case == 'fifo':
        os.mkfifo(tmp_path / 'w.bin')
    for message in (_engine_error(path), _info_error(path)):
        assert says in message and 'onnxruntime_src' not in message, message


def test_weights_beside_the_model_are_read_from_its_folder_not_the_working_directory(recurrent_onnx, tmp_path,
                                                                                      monkeypatch):
    """The NaN check read external data relative to the working directory: a model with its weights beside it
    was refused ('should be stored in w.bin, but it is not regular file'), or a w.bin where the node was started
    was read in their place (here: NaNs, so the model was refused as diverged)."""
    import numpy as np
    holder = {}
    path = _edited(recurrent_onnx, tmp_path / 'models' / 'm.onnx',
                   graph=lambda m: holder.setdefault('data', _external(m, 'w.bin')))
    (path.parent / 'w.bin').write_bytes(holder['data'])
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'w.bin').write_bytes(np.full(len(holder['data']) // 4, np.nan, np.float32).tobytes())
    monkeypatch.chdir(elsewhere)
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu'))
    assert engine.step(np.zeros((64, 64, 3), np.uint8), 0).class_ids.shape == (64, 64)


def _state_inputs(model, keep: int):
    """Only the first ``keep`` graph inputs of ``model`` kept (the others become zero-filled constants)."""
    import onnx
    from onnx import helper
    for value in list(model.graph.input)[keep:]:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        model.graph.node.insert(0, helper.make_node('ConstantOfShape', [value.name + '_shape'], [value.name]))
        model.graph.initializer.append(helper.make_tensor(value.name + '_shape', onnx.TensorProto.INT64,
                                                          [len(dims)], dims))
        model.graph.input.remove(value)


def _image_dims(model, **dims):
    shape = model.graph.input[0].type.tensor_type.shape.dim
    for index, value in dims.items():
        shape[int(index[1:])].dim_value = value


@pytest.mark.parametrize('meta, says', [
    (lambda i: 'not json {', 'metadata is not valid JSON'),
    (lambda i: '[' * 100000 + ']' * 100000, 'metadata is not valid JSON'),      # RecursionError: 'internal error'
    (lambda i: dict(i, junk='x' * (17 << 20)), '(ours are a few kB): not loaded'),
    (lambda i: dict(i, stride='8'), "vidseg_meta.stride is '8'"),
    (lambda i: dict(i, stride=10 ** 9), 'vidseg_meta.stride is 1000000000'),    # per frame: allocation error
    (lambda i: dict(i, state_layout='x'), 'vidseg_meta.state_layout'),           # 'not enough values to unpack'
    (lambda i: dict(i, state_layout=[[4, 0]] * 3), 'vidseg_meta.state_layout'),  # per frame: ZeroDivisionError
    (lambda i: dict(i, num_classes='2'), "vidseg_meta.num_classes is '2'"),
    (lambda i: dict(i, kind='foo'), "kind must be one of frame, keyframe, recurrent, got 'foo'"),
    (lambda i: {k: v for k, v in i.items() if k != 'kind'}, 'kind must be one of frame, keyframe, recurrent, got None'),
    (lambda i: dict(i, kind='keyframe'), 'a keyframe model has no recurrent state'),
], ids=['not-json', 'nested', 'huge', 'stride-str', 'stride-huge', 'layout-str', 'layout-zero', 'classes-str',
        'kind-unknown', 'kind-missing', 'kind-at-odds'])
def test_exported_metadata_of_wrong_types_or_sizes_is_refused_at_load(recurrent_onnx, tmp_path, meta, says):
    """Each loaded, or failed as another error than CheckpointError (vidseg info: 'internal error' for the nested
    one, a message without the file's name for the others); some failed only on every frame the node was sent.
    No kind at all: the node's loader said "cannot load this exported model ('kind')", `vidseg info` 'internal
    error, please report it: KeyError: 'kind'' (exit 1)."""
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', meta=meta)
    for message in (_engine_error(path), _info_error(path)):
        assert says in message and str(path) in message, message


def _three_classes(info):
    meta = dict(info['meta'], classes=['a', 'b', 'c'], palette=[[0, 0, 0]] * 3,
                arch_config=dict(info['meta']['arch_config'], num_classes=3))
    return dict(info, num_classes=3, meta=meta)


@pytest.mark.parametrize('graph, meta, says', [
    (None, _three_classes, "output 'logits' is float ['?', 2, '?', '?']; the engine uses float logits [1, 3"),
    (None, lambda i: dict(i, state_layout=i['state_layout'] * 2), "metadata says 7 and 7"),
    (lambda m: _state_inputs(m, 1), None, 'its graph has 1 input(s) and 4 output(s)'),
    (lambda m: _image_dims(m, d1=1), None, "input 'image' is float ['?', 1, '?', '?']"),
    (lambda m: _image_dims(m, d0=4), None, "input 'image' is float [4, 3, '?', '?']"),
    (lambda m: _image_dims(m, d2=10 ** 9, d3=10 ** 9), None, "input 'image' is float ['?', 3, 1000000000"),
], ids=['3-names-2-channels', 'more-states', 'fewer-inputs', '1-channel', 'batch-4', 'fixed-size'])
def test_a_graph_at_odds_with_its_metadata_is_refused_at_load(recurrent_onnx, tmp_path, graph, meta, says):
    """Loaded and served (3 class names for 2 logit channels; state tensors the graph does not take, dropped), or
    failed on every frame ('Got invalid dimensions for input: image'); `vidseg info` described all (exit 0)."""
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', graph=graph, meta=meta)
    for message in (_engine_error(path), _info_error(path)):
        assert says in message, message


def test_onnxruntime_s_reason_is_kept_without_its_cpp_source_lines(recurrent_onnx, tmp_path):
    """The 300 characters shown were '/onnxruntime_src/onnxruntime/core/graph/model.cc:256
    onnxruntime::Model::Model(onnx::ModelProto&&, const ...' and never reached the reason."""
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', graph=lambda m: setattr(m, 'ir_version', 99))
    message = _engine_error(path)
    assert 'Unsupported model IR version: 99' in message and 'onnxruntime_src' not in message, message



@pytest.fixture(scope='module')
def keyframe_onnx(saved, tmp_path_factory):
    """The key-frame checkpoint's ONNX pair: the path of its X.onnx (X.current.onnx beside it)."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    from vidseg_ros.tools.export import export_onnx
    path = tmp_path_factory.mktemp('pair') / 'kf.onnx'
    export_onnx(saved, path)
    return path


@pytest.mark.parametrize('text', ['not json {', '[1, 2]'], ids=['not-json', 'a-list'])
def test_a_current_frame_graph_whose_metadata_is_no_json_object_is_refused_as_info_says(keyframe_onnx, tmp_path,
                                                                                         text):
    """`vidseg info` noted 'kf.current.onnx cannot be its partner (...): the engine refuses the pair' (exit 0) while
    the engine loaded the pair and served it, the two graphs not compared (a partner of another export ran)."""
    import json
    import shutil
    shutil.copy(keyframe_onnx, tmp_path / 'kf.onnx')
    _edited(keyframe_onnx.with_name('kf.current.onnx'), tmp_path / 'kf.current.onnx', meta=lambda i: text)
    message = _engine_error(tmp_path / 'kf.onnx')
    assert str(tmp_path / 'kf.current.onnx') in message and 'metadata is no JSON object' in message, message
    r = CliRunner().invoke(app, ['info', str(tmp_path / 'kf.onnx')])
    assert r.exit_code == 0 and any('the engine refuses the pair' in n for n in json.loads(r.stdout)['notes']), \
        r.output


@pytest.mark.parametrize('suffix', ['.ts', '.onnx'])
def test_an_exported_model_whose_own_name_is_not_utf8_is_to_be_renamed_not_re_exported(exported, keyframe_onnx,
                                                                                      tmp_path, suffix):
    """The runtimes take UTF-8 text only (files.text_path): the error was 'cannot load this exported model ([Errno
    84] a name that is not UTF-8 text; rename the file: ...); re-export it with `vidseg export`', the file named
    twice and a re-export (under the same name) given as the fix."""
    import shutil
    name = os.fsdecode(b'caf\xe9')
    try:
        (tmp_path / f'{name}.probe').touch()
    except (OSError, UnicodeEncodeError) as e:
        pytest.skip(f'this file system refuses a Latin-1 name: {e}')
    path = tmp_path / f'{name}{suffix}'
    shutil.copy(exported if suffix == '.ts' else keyframe_onnx, path)
    if suffix == '.onnx':
        shutil.copy(keyframe_onnx.with_name('kf.current.onnx'), tmp_path / f'{name}.current.onnx')
    message = _engine_error(path)
    assert message == f'{path}: a name that is not UTF-8 text; rename the file', message


def _short_raw(model):
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    weight.raw_data = weight.raw_data[:len(weight.raw_data) // 2]


def _offset_text(model):
    _external(model, 'w.bin')
    entry = max(model.graph.initializer, key=lambda t: len(t.external_data)).external_data.add()
    entry.key, entry.value = 'offset', 'abc'


@pytest.mark.parametrize('graph, says', [
    (_short_raw, 'declares shape [256, 256, 3, 3] but holds 294912 values; re-export the model'),
    (_offset_text, 'has an external data offset or length that is no number'),
], ids=['weight-half-stored', 'offset-not-a-number'])
def test_weights_whose_stored_data_do_not_fit_are_one_line(recurrent_onnx, tmp_path, graph, says):
    """A weight stored in the file with half its bytes (a damaged copy, a hand-edited graph), one whose external
    offset is no number: refused naming the weight, by the engine and `vidseg info` alike."""
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', graph=graph)
    (tmp_path / 'w.bin').write_bytes(bytes(4 << 20))
    for message in (_engine_error(path), _info_error(path)):
        assert says in message and str(path) in message, message


def test_a_key_frame_pair_exported_before_cache_tensors_was_recorded_runs_as_it_did(keyframe_onnx, tmp_path):
    """Older exports lack ``cache_tensors`` in both graphs' metadata: the runner takes the count from the graphs
    and serves the same masks as the pair that records it."""
    import shutil

    import numpy as np
    for name in ('kf.onnx', 'kf.current.onnx'):
        _edited(keyframe_onnx.with_name(name), tmp_path / name,
                meta=lambda i: {k: v for k, v in i.items() if k != 'cache_tensors'})
    shutil.copy(keyframe_onnx.with_name('kf.current.onnx'), tmp_path / 'new.current.onnx')
    shutil.copy(keyframe_onnx, tmp_path / 'new.onnx')
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8) for i in range(4)]
    masks = {}
    for name in ('kf.onnx', 'new.onnx'):
        engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(tmp_path / name), device='cpu',
                                                              keyframe_interval=2))
        masks[name] = [engine.step(f, i).confidence for i, f in enumerate(frames)]
    for old, new in zip(masks['kf.onnx'], masks['new.onnx']):
        np.testing.assert_array_equal(old, new)

# ---- the path and its suffix ------------------------------------------------------------------------------
def test_a_checkpoint_named_ts_is_named_as_one(saved, tmp_path):
    """torch.jit.load said 'PytorchStreamReader failed locating file constants.pkl: file not found. This is an
    internal miniz error. If you are seeing this error, there is a high likelihood that your ...' (clipped)."""
    path = tmp_path / 'model.ts'
    path.write_bytes(saved.read_bytes())
    for message in (_engine_error(path), _info_error(path)):
        assert 'is a torch checkpoint (torch.save), not a TorchScript export: name it model.pt' in message, message



def test_a_torchscript_archive_whose_directory_is_corrupt_is_one_line(exported, tmp_path):
    """Its end record intact (a zip to ``zipfile.is_zipfile``), its central directory not: the error was torch's
    miniz text clipped at 300 characters ('... This can happen if the checkpoint was not saved properly, was
    transferred incorrec); re-export it'), not the 'truncated or corrupt' of a truncated archive."""
    import struct
    data = bytearray(exported.read_bytes())
    end = data.rfind(b'PK\x05\x06')
    directory = struct.unpack('<I', data[end + 16:end + 20])[0]
    data[directory:directory + 4] = b'XXXX'     # the first directory entry's signature
    path = tmp_path / 'model.ts'
    path.write_bytes(bytes(data))
    assert zipfile.is_zipfile(path)
    for message in (_engine_error(path), _info_error(path)):
        assert 'is not a (complete) TorchScript archive: truncated or corrupt; re-copy or re-export it' in message \
            and 'miniz' not in message, message

class _OnlyKey(torch.nn.Module):
    def forward(self, x):
        return x

    @torch.jit.export
    def forward_key(self, x):
        return x[:, :2], x


class _BareTensors(_OnlyKey):
    @torch.jit.export
    def forward_key(self, x):
        return x[:, :2]

    @torch.jit.export
    def forward_current(self, x):
        return x[:, :2]


@pytest.mark.parametrize('module, says', [(_OnlyKey, 'has no forward_current method'),
                                          (_BareTensors, 'its forward_key takes 1 and returns 1 tensor(s)')])
def test_a_torchscript_file_whose_methods_do_not_fit_its_kind_is_refused_at_load(exported, tmp_path, module, says):
    """A missing method was torch's AttributeError; a forward_current of the wrong arity loaded and failed on every
    frame ('expected at most 2 argument(s) but received 4'), a bare tensor as "axes don't match array"."""
    with zipfile.ZipFile(exported) as z:
        meta = next(z.read(n) for n in z.namelist() if n.endswith('/extra/vidseg_meta.json'))
    path = tmp_path / 'odd.ts'
    torch.jit.save(torch.jit.script(module()), str(path), _extra_files={'vidseg_meta.json': meta})
    for message in (_engine_error(path), _info_error(path)):
        assert says in message, message


@pytest.mark.parametrize('which', ['pt', 'ts', 'onnx'])
def test_a_model_file_this_process_may_not_read_says_so(saved, exported, recurrent_onnx, monkeypatch, which):
    """A .pt was 'not a torch checkpoint or is corrupt ([Errno 13] Permission denied...)'; a .ts or .onnx raised a
    bare PermissionError (no CheckpointError). open() is made to refuse: these tests run as root too."""
    import builtins
    path = {'pt': saved, 'ts': exported, 'onnx': recurrent_onnx}[which]
    real_open = builtins.open

    def refusing(file, *args, **kw):
        if str(file) == str(path):
            raise PermissionError(13, 'Permission denied', str(file))
        return real_open(file, *args, **kw)
    monkeypatch.setattr(builtins, 'open', refusing)
    for message in (_engine_error(path), _info_error(path)):
        assert message.endswith(f'cannot read {path}: Permission denied'), message


@pytest.mark.parametrize('graph, says', [
    (lambda m: setattr(m, 'ir_version', 99), 'Unsupported model IR version: 99'),
    (lambda m: setattr(m.graph.node[0], 'op_type', 'NoSuchOp'), 'No Op registered for NoSuchOp'),
    (lambda m: setattr(m.opset_import[0], 'version', 99), 'Opset 99 is under development'),
], ids=['ir-99', 'unknown-op', 'opset-99'])
def test_info_refuses_an_onnx_graph_onnxruntime_cannot_load(recurrent_onnx, tmp_path, monkeypatch, graph, says):
    """`vidseg info` parsed the file with the onnx package alone and described it (exit 0); the node refused it.
    The file is named relative to the current folder: an over-long error line loses its middle, and under a longer
    temporary folder (pytest-xdist's .../popen-gw0/...) onnxruntime's reason fell in that middle."""
    monkeypatch.chdir(tmp_path)
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', graph=graph).name
    for message in (_engine_error(path), _info_error(path)):
        assert says in message and 'cannot load this exported model' in message, message


def test_an_empty_onnx_file_is_an_incomplete_model_to_info_as_to_the_engine(tmp_path):
    """Empty bytes parse as an empty ModelProto: info said 'has no vidseg_ros metadata', the engine 'not a complete
    ONNX model'."""
    pytest.importorskip('onnx')
    path = tmp_path / 'empty.onnx'
    path.write_bytes(b'')
    for message in (_engine_error(path), _info_error(path)):
        assert 'is not a complete ONNX model' in message, message


def test_meta_nested_deeper_than_python_recurses_is_refused(raw, tmp_path):
    """Provenance nested 5000 lists deep loaded in the engine; `vidseg info` died of RecursionError ('internal
    error', exit 1). torch.save itself needs a deep stack for it: written from a thread with one."""
    import sys
    import threading
    data = copy.deepcopy(raw)
    deep = []
    for _ in range(5000):
        deep = [deep]
    data['meta']['provenance']['deep'] = deep
    path = tmp_path / 'deep.pt'
    limit, size = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(100_000)
    threading.stack_size(256 << 20)
    try:
        writer = threading.Thread(target=torch.save, args=(data, path))
        writer.start()
        writer.join()
    finally:
        sys.setrecursionlimit(limit)
        threading.stack_size(size)
    for message in (_engine_error(path), _info_error(path)):
        assert 'meta is nested more than 32 levels deep' in message, message


@pytest.mark.parametrize('make, says', [
    (lambda p: p.mkdir(), 'is a folder'),
    (lambda p: os.mkfifo(p), 'is not a regular file (a FIFO, a device...)'),
    (lambda p: (p.symlink_to(p.with_name('b.onnx')), p.with_name('b.onnx').symlink_to(p)),
     'is a link to nothing, or one that loops'),
], ids=['folder', 'fifo', 'link-loop'])
def test_an_exported_model_path_that_is_no_regular_file_says_what_it_is(tmp_path, make, says):
    """A folder, a FIFO and a link loop were each 'model file not found' (they are there). Nothing is opened:
    reading a FIFO would block."""
    from vidseg_ros.engine.backends import open_exported
    from vidseg_ros.tools.exported_info import describe
    path = tmp_path / 'a.onnx'
    make(path)
    for load in (open_exported, describe):
        with pytest.raises(CheckpointError, match=f'model file {path} {says}'.replace('(', r'\(').replace(')', r'\)')):
            load(path)


def test_an_onnx_file_over_protobuf_s_limit_is_refused_unread(tmp_path):
    """onnx.load and onnxruntime read the whole file first: a sparse 3 GB .onnx (4 kB on disk) took 3.4 GB of
    memory before it was refused as corrupt (a sparse 20 GB one, 20 GB). Here 2 GiB + 1, sparse."""
    path = tmp_path / 'sparse.onnx'
    with open(path, 'wb') as f:
        f.write(b'\x08\x07')
        f.truncate(2 ** 31 + 1)
    for message in (_engine_error(path), _info_error(path)):
        assert 'an ONNX file holds at most 2 GiB' in message and 'not read' in message, message


def test_a_constant_whose_value_lies_outside_the_model_s_folder_is_refused_unread(recurrent_onnx, tmp_path):
    """A Constant node's value can be external data too (onnxruntime refused it in its own words; info: exit 0)."""
    from onnx import helper

    def constant(model):
        value = helper.make_tensor('c', 1, [1], [0.0])
        value.ClearField('float_data')
        value.data_location = 1
        for key, text in (('location', str(tmp_path / 'secret.bin')), ('length', '4')):
            entry = value.external_data.add()
            entry.key, entry.value = key, text
        model.graph.node.append(helper.make_node('Constant', [], ['unused_constant'], value=value))
    (tmp_path / 'secret.bin').write_bytes(bytes(4))
    path = _edited(recurrent_onnx, tmp_path / 'models' / 'm.onnx', graph=constant)
    for message in (_engine_error(path), _info_error(path)):
        assert "weight c is stored in" in message and "outside the model's folder: not read" in message, message


def test_info_sees_a_graph_s_outputs_as_the_engine_does_and_keeps_onnxruntime_s_log_lines_off_stderr(
        recurrent_onnx, tmp_path):
    """A graph declaring 7 logit channels where onnxruntime infers 2 (what it computes) is served by the engine;
    info refused it from the declared shape. Its session prints no 'W:onnxruntime ... MergeShapeInfo' line."""
    import subprocess
    import sys

    def seven(model):
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7
    path = _edited(recurrent_onnx, tmp_path / 'm.onnx', graph=seven)
    StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu'))
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'info', str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stderr == '', (r.returncode, r.stderr)
