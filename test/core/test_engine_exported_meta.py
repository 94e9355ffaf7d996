"""An exported file's vidseg_meta size limit (MAX_META_BYTES) is in bytes, as its name says."""
import json

import pytest

from vidseg_ros.engine.exported_checks import MAX_META_BYTES, exported_meta_info
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta
from vidseg_ros.models.contract import stream_info
from vidseg_ros.models.model_file_checks import CheckpointError


@pytest.fixture(scope='module')
def info():
    """The vidseg_meta dict an export of a small recurrent model writes (less its ids)."""
    model = create_model('recurrent_unet', num_classes=2, size='small_shallow', temporal_levels=3)
    meta = default_meta('recurrent_unet', model.arch_config, classes=['bg', 'fg'], palette=[[0, 0, 0], [9, 9, 9]],
                        input_hw=[64, 64])
    return {'meta': meta, **stream_info(model).to_dict()}


def _padded(info, junk: str) -> str:
    return json.dumps(dict(info, junk=junk), ensure_ascii=False)


def test_metadata_over_the_limit_in_bytes_is_refused_though_fewer_characters(info):
    """6M '€' (3 bytes each in UTF-8) is 18 MB of metadata; counted in characters it passed the 16 MiB limit and
    was parsed and loaded."""
    text = _padded(info, '€' * 6_000_000)
    assert len(text) < MAX_META_BYTES < len(text.encode())
    with pytest.raises(CheckpointError, match=r'metadata is over 16 MiB \(ours are a few kB\): not loaded'):
        exported_meta_info(text, 'm.onnx')


def test_metadata_at_the_limit_in_bytes_loads(info):
    small = _padded(info, '')
    text = _padded(info, '€' * ((MAX_META_BYTES - len(small.encode())) // 3))
    assert MAX_META_BYTES - 3 < len(text.encode()) <= MAX_META_BYTES
    meta, stream = exported_meta_info(text, 'm.onnx')
    assert meta['classes'] == ['bg', 'fg'] and stream.kind == 'recurrent'
    with pytest.raises(CheckpointError, match='over 16 MiB'):
        exported_meta_info(_padded(info, 'x' * (MAX_META_BYTES - len(small.encode()) + 1)), 'm.onnx')


def test_torchscript_metadata_comes_as_bytes_and_is_measured_as_such(info):
    """torch.jit.load gives its extra files as bytes (onnxruntime gives str): 4c3e7d9 called .encode on them and
    every .ts load failed ('bytes' object has no attribute 'encode')."""
    meta, stream = exported_meta_info(_padded(info, '€').encode(), 'm.ts')
    assert meta['classes'] == ['bg', 'fg'] and stream.kind == 'recurrent'
    with pytest.raises(CheckpointError, match='over 16 MiB'):
        exported_meta_info(_padded(info, '€' * 6_000_000).encode(), 'm.ts')
