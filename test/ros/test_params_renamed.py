"""A setting's earlier name, given as a ROS parameter (params file or -p), still sets it, with a warning (one
rule: ``config.current_names``). rclpy merges parameter files and -p into one map, so both names with different
values is an old-name file overridden under the new name: the new name wins, the warning names both (in one
YAML file it is an error, test_config)."""
from dataclasses import dataclass

import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.parameter import Parameter  # noqa: E402

from vidseg_ros.config import ConfigError, setting  # noqa: E402
from vidseg_ros.ros.params import declare_settings, read_settings  # noqa: E402
from vidseg_ros.ros.recorder_params import RecorderSettings  # noqa: E402


@dataclass(frozen=True)
class Toy:
    input_depth: int = setting(100, 'depth', renamed_from=('qos_depth',))
    input_reliability: str = setting('reliable', 'rel', ('reliable', 'best_effort'), renamed_from=('qos_reliability',))


@pytest.fixture
def make_node():
    rclpy.init()
    nodes = []

    def make(**given):
        node = rclpy.create_node(f'renamed_{len(nodes)}', parameter_overrides=[Parameter(k, value=v)
                                                                            for k, v in given.items()])
        nodes.append(node)
        return node
    yield make
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown()


def test_old_name_sets_the_new_one(make_node):
    node = make_node(qos_depth=7, qos_reliability='best_effort')
    declare_settings(node, Toy)
    assert read_settings(node, Toy) == Toy(input_depth=7, input_reliability='best_effort')
    assert not node.has_parameter('qos_depth')          # one name per setting: the old one is not declared


def test_both_names_with_different_values_the_new_name_wins_with_a_warning(make_node):
    node = make_node(qos_depth=7, input_depth=9)
    warnings = []
    node.get_logger().warning = warnings.append   # what declare_settings reports through the node's logger
    declare_settings(node, Toy)
    assert read_settings(node, Toy).input_depth == 9
    assert any('qos_depth=7 and input_depth=9 both given' in w and 'using input_depth=9' in w for w in warnings)


def test_both_names_with_the_same_value_is_fine(make_node):
    node = make_node(qos_depth=9, input_depth=9)
    declare_settings(node, Toy)
    assert read_settings(node, Toy).input_depth == 9


def test_recorder_qos_settings_read_their_old_names(make_node):
    node = make_node(qos_depth=3)
    declare_settings(node, RecorderSettings)
    assert read_settings(node, RecorderSettings).input_depth == 3
