"""Launch files build their descriptions (needs launch/launch_ros from a ROS install: skipped without)."""
import importlib.util

import pytest
from ros_helpers import ROOT

pytest.importorskip('launch')
pytest.importorskip('launch_ros')


@pytest.mark.parametrize('name', ['segment.launch.py', 'record.launch.py'])
def test_launch_description_builds(name):
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), ROOT / 'launch' / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    args = {a.name for a in description.get_launch_arguments()}
    assert 'image' in args
