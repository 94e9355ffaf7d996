"""config/recorder.yaml and launch/record.launch.py agree with RecorderSettings (no rclpy needed)."""
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from vidseg_ros.config import from_dict, load_yaml
from vidseg_ros.ros.recorder_params import RecorderSettings

ROOT = Path(__file__).resolve().parents[2]


def test_recorder_yaml_matches_settings():
    params = load_yaml(ROOT / 'config' / 'recorder.yaml')['/**']['ros__parameters']
    settings = from_dict(RecorderSettings, params)  # strict: unknown keys or wrong types fail
    assert set(params) == {f.name for f in dataclasses.fields(RecorderSettings)}
    assert settings == RecorderSettings(), 'recorder.yaml should spell out the defaults'


def test_record_launch_builds():
    pytest.importorskip('launch_ros')
    spec = importlib.util.spec_from_file_location('record_launch', ROOT / 'launch' / 'record.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities
