"""Property tests (hypothesis) of the settings machinery every YAML file, --set and ROS parameter goes through:
for ANY values under the real keys (and any YAML text), the answer is a settings object that passes its own
check again, or a ConfigError naming the setting, never a TypeError, KeyError or OverflowError from deep
inside, which the CLI would print as an internal error and the node as a crash at start-up."""
from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, example, given, settings, strategies as st

from vidseg_ros.config import ConfigError, from_dict, load_yaml, to_dict
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.training.config import TrainConfig

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(['auto', 'cpu', 'fp16', '1e-3', '', '~/x', 'nan']))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _mapping(cls):
    keys = [f.name for f in dataclasses.fields(cls)]
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=10)), values, max_size=6)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _holds(cls, data):
    try:
        cfg = from_dict(cls, data)
    except ConfigError as e:
        assert str(e)
        return
    again = from_dict(cls, to_dict(cfg))          # what was accepted passes its own check, unchanged
    assert all(_same(getattr(cfg, f.name), getattr(again, f.name)) for f in dataclasses.fields(cls))


@SETTINGS
@given(data=_mapping(EngineConfig))
@example(data={'keyframe_interval': 10**20})
@example(data={'input_hw': [float('inf'), 3]})
@example(data={'max_gap_s': float('nan')})
def test_any_engine_settings_build_a_config_or_a_config_error(data):
    _holds(EngineConfig, data)


@SETTINGS
@given(data=_mapping(TrainConfig))
@example(data={'lr': '1e-3', 'epochs': 10**20})
@example(data={'input_hw': {'a': 1}})
def test_any_training_settings_build_a_config_or_a_config_error(data):
    _holds(TrainConfig, data)


@SETTINGS
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.sampled_from(['a: 1', 'a: 2', '- x', 'b: [1, 2', 'c: !!python/object:os.system x',
                                                '&x a: *x', '? [1]\n: 2', 'd: {e: f}', '\t', '%YAML 1.1', '---']),
                               max_size=6).map('\n'.join)))
def test_any_yaml_text_is_a_mapping_or_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp('cfg') / 'c.yaml'
    path.write_text(text)
    try:
        data = load_yaml(path)
    except ConfigError as e:
        assert str(path) in str(e)
        return
    assert isinstance(data, dict)
