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
