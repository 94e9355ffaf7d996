"""Strict settings: unknown keys, wrong types and bad choices are rejected with the key named."""
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidseg_ros.config import ConfigError, from_dict, load_config, load_yaml, setting
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


def test_renamed_training_settings_have_one_name_and_old_files_still_load(tmp_path, caplog):
    """key_distance -> max_distance, key_distance_mode -> distance_mode, motion_px -> shift_px_per_frame:
    the new names everywhere (dataclass, shipped YAML); old YAML, overrides and checkpoints still read."""
    import logging

    from vidseg_ros.training.config import TrainConfig, load_train_config
    from vidseg_ros.tools.eval_report import card_text
    root = ROOT
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    old = {'key_distance', 'key_distance_mode', 'motion_px'}
    assert {'max_distance', 'distance_mode', 'shift_px_per_frame'} <= names and not old & names
    for path in sorted((root / 'config' / 'train').glob('*.yaml')):
        assert not old & set(load_yaml(path)), path.name
    old_yaml = tmp_path / 'old.yaml'
    old_yaml.write_text('key_distance: 7\nkey_distance_mode: constant\nmotion_px: 1.5\n')
    with caplog.at_level(logging.WARNING):
        cfg = load_train_config(old_yaml)
    assert (cfg.max_distance, cfg.distance_mode, cfg.shift_px_per_frame) == (7, 'constant', 1.5)
    assert 'key_distance is deprecated: it is now called max_distance' in caplog.text
    assert load_train_config(None, {'key_distance': 3}).max_distance == 3
    assert load_train_config(old_yaml, {'max_distance': 2}).max_distance == 2   # override wins
    with pytest.raises(ConfigError, match='key_distance=3 and max_distance=4 both given'):
        from_dict(TrainConfig, {'key_distance': 3, 'max_distance': 4})
    assert from_dict(TrainConfig, {'key_distance': 4, 'max_distance': 4}).max_distance == 4   # same value: fine
    report = {'model': 'm.pt', 'data': 'd', 'split': 's', 'sequences': 1, 'device': 'cpu', 'labelled': False,
              'intervals': {'1': {'latency_ms': 1.0, 'latency_key_ms': 1.0, 'latency_current_ms': 1.0}}}
    card = card_text(report, {'train_config': {'key_distance': 10, 'mode': 'keyframe'}})
    assert 'max_distance: 10' in card and 'key_distance' not in card


def test_how_a_setting_changes_at_run_time_is_field_metadata():
    from vidseg_ros.config import fields_with, setting
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import REBUILD_FIELDS
    from vidseg_ros.ros.settings import SegmentNodeConfig
    assert REBUILD_FIELDS == fields_with(EngineConfig, 'rebuild')
    assert {'model', 'device', 'precision'} <= set(REBUILD_FIELDS) and 'key_interval' not in REBUILD_FIELDS
    startup = fields_with(SegmentNodeConfig, 'startup')
    assert {'transport', 'cameras', 'input_depth', 'use_camera_info'} <= set(startup)
    assert 'publish_overlay' not in startup
    with pytest.raises(ValueError, match='change must be one of'):
        setting(1, 'x', change='sometimes')


@dataclass
class Clearable:
    output: str = setting('out.pt', 'a path; empty = none')
    freeze: list[str] = setting(['encoder'], 'prefixes')
    epochs: int = setting(3, 'a count')
    lr: float = setting(0.1, 'a rate')
    ignore: int | None = setting(None, 'null allowed')


@pytest.mark.parametrize('yaml_value', ['null', '~', ''])
def test_null_is_one_rule_in_yaml_and_overrides(tmp_path, yaml_value):
    """`--set output=null` was dropped (the file's value stayed, the output still written) while YAML
    `output: null` was 'expected str, got NoneType': null is now refused in both with how to clear the
    setting, and stays a value where the type allows it."""
    path = tmp_path / 'c.yaml'
    path.write_text(f'output: {yaml_value}\n')
    with pytest.raises(ConfigError, match=r"output: null .* output: '' \(YAML\) or --set output="):
        load_config(Clearable, path)
    for key, hint in [('output', '--set output='), ('freeze', r'--set freeze=\[\]'), ('epochs', 'give a value')]:
        with pytest.raises(ConfigError, match=f'{key}: null .*{hint}'):
            load_config(Clearable, None, {key: None})
    assert load_config(Clearable, None, {'output': '', 'freeze': [], 'ignore': None}) == \
        Clearable(output='', freeze=[], ignore=None)


def test_set_null_reaches_the_settings_check():
    from vidseg_ros.tools.cli_options import parse_set
    from vidseg_ros.training.config import load_train_config
    overrides = parse_set(['output=null', 'val_split='])
    assert overrides == {'output': None, 'val_split': ''}
    with pytest.raises(ConfigError, match='output: null'):
        load_train_config(None, overrides)
    assert load_train_config(None, {'val_split': ''}).val_split == ''


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    """Two `epochs:` in one file: the last one won silently."""
    path = tmp_path / 'dup.yaml'
    path.write_text('epochs: 1\nlr: 0.5\nepochs: 3\n')
    with pytest.raises(ConfigError, match=rf"{path}: line 3: key 'epochs' is given twice \(first on line 1\)"):
        load_config(Clearable, path)
    nested = tmp_path / 'nested.yaml'
    nested.write_text('a:\n  b: 1\n  b: 2\n')
    with pytest.raises(ConfigError, match="line 3: key 'b' is given twice"):
        load_yaml(nested)


def test_anchors_and_merge_keys_still_work(tmp_path):
    path = tmp_path / 'merge.yaml'
    path.write_text('base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  y: 3\nother: {<<: *b}\n')
    assert load_yaml(path) == {'base': {'x': 1, 'y': 2}, 'run': {'x': 1, 'y': 3}, 'other': {'x': 1, 'y': 2}}


@pytest.mark.parametrize('text, value', [('1e-3', 1e-3), ('5E4', 5e4), ('1.0e3', 1e3), ('-2e+2', -200.0),
                                         ('.5e1', 5.0), ('2', 2), ('0.5', 0.5), ('1e', '1e'), ('e3', 'e3')])
def test_exponent_floats_read_as_numbers(tmp_path, text, value):
    """`lr: 1e-3` was 'lr: expected float, got str' (PyYAML reads YAML 1.1: a dot and a signed exponent)."""
    path = tmp_path / 'n.yaml'
    path.write_text(f'v: {text}\n')
    got = load_yaml(path)['v']
    assert got == value and type(got) is type(value)
    path.write_text('lr: 1e-3\n')
    assert load_config(Clearable, path).lr == 1e-3


def test_unknown_key_suggests_the_close_name_before_the_key_list():
    """`warmup_step` was cut at 400 characters before `warmup_steps` appeared in the key list."""
    from vidseg_ros.tools.cli_errors import one_line
    from vidseg_ros.training.config import TrainConfig
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {'warmup_step': 10, 'zzz': 1})
    shown = one_line(e.value)
    assert shown.startswith('unknown setting(s) warmup_step (did you mean warmup_steps?), zzz; valid keys: ')


def test_a_leading_tilde_in_a_path_setting_is_expanded_when_loaded(tmp_path, monkeypatch):
    """data_root: ~/ds was refused as 'not a folder', output: ~/x.pt made a folder named '~' in the current
    folder: every path setting of a training config takes ~ as a shell would; other texts keep it."""
    from vidseg_ros.training.config import TrainConfig, load_train_config
    monkeypatch.setenv('HOME', str(tmp_path))
    paths = ['data_root', 'init_from', 'output', 'runs_dir', 'teacher', 'temporal_data']
    (tmp_path / 'c.yaml').write_text('data_root: ~/ds\nname: "~run"\n')
    cfg = load_train_config(tmp_path / 'c.yaml', {key: f'~/{key}' for key in paths[1:]})
    assert cfg.data_root == f'{tmp_path}/ds' and cfg.name == '~run'
    assert {key: getattr(cfg, key) for key in paths[1:]} == {key: f'{tmp_path}/{key}' for key in paths[1:]}
    assert load_train_config(None, {'init_from': 'camvid_fpn'}).init_from == 'camvid_fpn'   # a name stays
    assert paths == sorted(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get('path'))
