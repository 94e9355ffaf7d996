"""segment_node's `cameras` setting: relative ROS namespaces, each once, checked wherever the settings are loaded
(YAML, parameters at start-up, a parameter change while inactive). Without ROS: the same check the node runs."""
import pytest

from vidseg_ros.config import ConfigError, from_dict
from vidseg_ros.ros.settings import SegmentNodeConfig


@pytest.mark.parametrize('cameras', [[], ['front'], ['front', 'rear'], ['car/front', 'car/rear'], ['_x', 'cam_2']])
def test_relative_namespaces_each_given_once_are_served(cameras):
    assert from_dict(SegmentNodeConfig, {'cameras': cameras}).cameras == cameras


@pytest.mark.parametrize('name', ['', '/front', 'front/', 'car//front', '2cam', 'car/2', 'front cam', 'caméra',
                                  'front\n', '~/front', 'a-b'])
def test_a_name_that_is_not_a_relative_namespace_is_refused(name):
    # '/front' and 'front/' are not read as 'front': distinct names must never map to the same topics
    with pytest.raises(ConfigError, match='not a relative namespace'):
        from_dict(SegmentNodeConfig, {'cameras': ['rear', name]})


def test_a_camera_given_twice_is_refused_once_named():
    # served twice, every frame would be segmented, published and reported twice
    with pytest.raises(ConfigError, match=r"cameras: 'front' given more than once") as e:
        from_dict(SegmentNodeConfig, {'cameras': ['front', 'rear', 'front']})
    assert 'rear' not in str(e.value)
    with pytest.raises(ConfigError, match='more than once'):
        SegmentNodeConfig(cameras=['a', 'a'])   # the dataclass itself, not only the loader


def test_a_hostile_name_is_truncated_in_the_error():
    with pytest.raises(ConfigError) as e:
        from_dict(SegmentNodeConfig, {'cameras': ['x' * 100_000 + '/']})
    assert len(str(e.value)) < 1000
