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
def raw(tmp_path_factory):
    """A tiny 2-class key-frame checkpoint as torch.load returns it."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, width_mult=0.25, fpn_ch=16)
    path = tmp_path_factory.mktemp('crafted') / 'kf.pt'
    save_checkpoint(path, model, default_meta('keyframe_fpn', model.arch_config, classes=['bg', 'robot'],
                                              palette=[[0, 0, 0], [255, 0, 0]], ignore_index=None,
                                              input_hw=[64, 64]))
    return torch.load(path, weights_only=True)


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
