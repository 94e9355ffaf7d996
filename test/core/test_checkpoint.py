"""Checkpoint round trip, meta contract, and clear errors for bad files."""
import pytest
import torch

from vidseg_ros.models import create_model
from vidseg_ros.constants import CAMVID_CLASSES, CAMVID_PALETTE
from vidseg_ros.models.checkpoint import (CheckpointError, default_meta,
                                          load_checkpoint, read_checkpoint, save_checkpoint)


@pytest.fixture()
def saved(tmp_path):
    model = create_model('keyframe_fpn', num_classes=11, width_mult=0.25)
    meta = default_meta('keyframe_fpn', model.arch_config, metrics={'miou': 0.5},
                        provenance={'trained': True, 'data': 'unit test'})
    path = save_checkpoint(tmp_path / 'm.pt', model, meta)
    return path, model


def test_round_trip(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert meta['arch'] == 'keyframe_fpn' and meta['arch_config']['width_mult'] == 0.25
    assert meta['classes'] == CAMVID_CLASSES and meta['palette'] == CAMVID_PALETTE
    assert meta['ignore_index'] == 11 and meta['input_hw'] == [360, 480]
    assert meta['provenance']['trained'] is True and meta['metrics'] == {'miou': 0.5}
    assert not loaded.training
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw['format'] == 'vidseg_ros/1'


def test_default_meta_constants():
    assert len(CAMVID_CLASSES) == 11 and len(CAMVID_PALETTE) == 11
    meta = default_meta('recurrent_unet', {'size': 'small_shallow'}, classes=['bg', 'fg'],
                        palette=[[0, 0, 0], [255, 0, 0]], ignore_index=None)
    assert meta['arch_config']['num_classes'] == 2 and meta['arch_config']['temporal_cell'] == 'cgru'
    assert meta['provenance']['trained'] is False and meta['train_config'] == {}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_checkpoint(tmp_path / 'none.pt')


def test_not_a_torch_file(tmp_path):
    p = tmp_path / 'text.pt'
    p.write_text('hello, not a checkpoint')
    with pytest.raises(CheckpointError, match='not a'):
        load_checkpoint(p)


def test_truncated(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / 'cut.pt'
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt|not a torch'):
        load_checkpoint(bad)


def test_plain_state_dict_is_rejected(tmp_path):
    p = tmp_path / 'sd.pt'
    torch.save(create_model('truncated_fpn').state_dict(), p)
    with pytest.raises(CheckpointError, match='not a vidseg_ros checkpoint'):
        load_checkpoint(p)


def test_pickled_object_is_refused(tmp_path):
    p = tmp_path / 'obj.pt'
    torch.save({'format': 'vidseg_ros/1', 'state_dict': {}, 'meta': {'x': object()}}, p)
    with pytest.raises(CheckpointError, match='weights_only'):
        load_checkpoint(p)


def test_unknown_arch_and_missing_meta(saved, tmp_path):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta']['arch'] = 'segformer'
    torch.save(raw, tmp_path / 'arch.pt')
    with pytest.raises(CheckpointError, match="unknown architecture 'segformer'"):
        load_checkpoint(tmp_path / 'arch.pt')
    del raw['meta']['classes']
    torch.save(raw, tmp_path / 'meta.pt')
    with pytest.raises(CheckpointError, match='meta lacks classes'):
        read_checkpoint(tmp_path / 'meta.pt')


def test_state_dict_mismatch_names_keys(saved, tmp_path):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta']['arch_config']['fpn_ch'] = 32
    torch.save(raw, tmp_path / 'shape.pt')
    with pytest.raises(CheckpointError, match=r'shape mismatch.*laterals\.1\.weight'):
        load_checkpoint(tmp_path / 'shape.pt')
    raw = torch.load(path, weights_only=True)
    raw['state_dict'].pop('classifier.weight')
    torch.save(raw, tmp_path / 'keys.pt')
    with pytest.raises(CheckpointError, match='missing key.*classifier.weight'):
        load_checkpoint(tmp_path / 'keys.pt')


def test_save_rejects_non_plain_meta(tmp_path):
    import numpy as np
    model = create_model('truncated_fpn')
    meta = default_meta('truncated_fpn', model.arch_config, metrics={'miou': np.float32(0.3)})
    with pytest.raises(CheckpointError, match='metrics.miou: float32 is not a plain value'):
        save_checkpoint(tmp_path / 'x.pt', model, meta)
    with pytest.raises(CheckpointError, match='meta lacks'):
        save_checkpoint(tmp_path / 'y.pt', model, {'classes': []})
