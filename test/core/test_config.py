"""Strict settings: unknown keys, wrong types and bad choices are rejected with the key named."""
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidseg_ros.config import ConfigError, from_dict, load_config, setting
from vidseg_ros.engine.base import EngineConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Demo:
    rate: float = setting(1.0, 'a rate')
    mode: str = setting('a', 'a mode', ('a', 'b'))
    sizes: list[int] = setting([], 'sizes')


def test_valid_values_and_int_to_float():
    d = from_dict(Demo, {'rate': 2, 'mode': 'b', 'sizes': [1, 2]})
    assert d.rate == 2.0 and isinstance(d.rate, float) and d.sizes == [1, 2]


@pytest.mark.parametrize('data, message', [
    ({'rat': 1.0}, 'unknown setting'), ({'rate': 'fast'}, 'rate: expected float'),
    ({'mode': 'c'}, "mode: 'c' is not one of"), ({'sizes': [1, 'x']}, r'sizes\[1\]'),
])
def test_invalid_values(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Demo, data)


def test_shipped_segment_yaml_matches_the_node_settings():
    from vidseg_ros.ros.settings import SegmentNodeConfig
    path = ROOT / 'config' / 'segment.yaml'
    engine = load_config(EngineConfig, path, ignore_unknown=True)
    node = load_config(SegmentNodeConfig, path, ignore_unknown=True)
    from vidseg_ros.config import load_yaml, ros_parameters
    keys = set(ros_parameters(load_yaml(path)))
    known = set(EngineConfig.__dataclass_fields__) | set(SegmentNodeConfig.__dataclass_fields__)
    assert keys <= known, f'unknown keys in segment.yaml: {keys - known}'
    assert engine.keyframe_interval >= 1 and node.transport == 'raw'


def test_malformed_yaml_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('a: [1, 2\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_config(Demo, bad)
    with pytest.raises(ConfigError, match='cannot read'):
        load_config(Demo, tmp_path / 'missing.yaml')
