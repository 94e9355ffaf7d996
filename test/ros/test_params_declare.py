"""declare_settings / read_settings on an in-process node (no DDS peer): what `ros2 param describe` shows, the
typed arrays `-p x:=[..]` and `ros2 param set x '[]'` need, and which settings are read-only. The real nodes'
tests (test_segment_params, test_params_empty_list) cover a few of these through a node process, slowly; these
pin each rule once, fast."""
from array import array
from dataclasses import dataclass

import pytest

rclpy = pytest.importorskip('rclpy')
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from support.waiting import wait_until  # noqa: E402

from vidseg_ros.config import setting  # noqa: E402
from vidseg_ros.ros.params import (declare_settings, keep_last_qos, read_settings,  # noqa: E402
                                   unmatched_publishers, validate_changes)


@dataclass(frozen=True)
class Toy:
    transport: str = setting('raw', 'input transport', ('raw', 'compressed'), change='startup')
    cameras: list[str] = setting([], 'camera namespaces', change='startup')
    palette: list[int] = setting([], 'flat palette', range=(0, 255))
    input_hw: list[int] = setting([], 'network input', range=(8, 8192), lengths=(0, 2))
    alpha: float = setting(0.5, 'opacity', range=(0.0, 1.0))
    depth: int = setting(2, 'queue depth', range=(1, 1000))


@pytest.fixture
def make_node():
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(read_only=None, **given):
        node = rclpy.create_node(f'declare_{len(nodes)}', context=context,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in given.items()])
        nodes.append(node)
        if read_only is None:   # the segment nodes' call
            declare_settings(node, Toy)
        else:
            declare_settings(node, Toy, read_only=read_only)
        return node
    yield make
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown(context=context)


def test_describe_shows_choices_ranges_and_lengths(make_node):
    node = make_node()
    assert 'one of: raw, compressed' in node.describe_parameter('transport').additional_constraints
    assert 'each value in 0..255' in node.describe_parameter('palette').additional_constraints
    hw = node.describe_parameter('input_hw')
    assert 'each value in 8..8192' in hw.additional_constraints and '0 or 2 values' in hw.additional_constraints
    assert not hw.integer_range   # an array's range is a text: rclpy's typed ranges are for scalars
    alpha = node.describe_parameter('alpha').floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)
    depth = node.describe_parameter('depth').integer_range[0]
    assert (depth.from_value, depth.to_value) == (1, 1000)
    assert node.describe_parameter('depth').description == 'queue depth'


def test_empty_list_settings_are_typed_arrays_given_as_lists(make_node):
    node = make_node()
    assert node.describe_parameter('palette').type == ParameterType.PARAMETER_INTEGER_ARRAY
    assert node.describe_parameter('cameras').type == ParameterType.PARAMETER_STRING_ARRAY
    assert read_settings(node, Toy).palette == []
    given = make_node(palette=[255, 0, 0], input_hw=[96, 128], cameras=['front'])
    cfg = read_settings(given, Toy)   # rclpy hands arrays over as array.array: the settings take lists
    assert (cfg.palette, cfg.input_hw, cfg.cameras) == ([255, 0, 0], [96, 128], ['front'])
    assert type(cfg.palette) is list and type(cfg.input_hw) is list
    # what rcl hands over (a `ros2 param set`, a parameter file): array.array, taken as a list
    green = Parameter('palette', Parameter.Type.INTEGER_ARRAY, array('q', [0, 255, 0]))
    assert given.set_parameters([green])[0].successful
    assert read_settings(given, Toy).palette == [0, 255, 0]
    ok, changes = validate_changes(given, [Parameter('input_hw', Parameter.Type.INTEGER_ARRAY, array('q', [64, 96]))],
                                   Toy)
    assert ok.successful and changes == {'input_hw': [64, 96]} and type(changes['input_hw']) is list


def test_an_array_is_emptied_by_an_untyped_empty_list(make_node):
    # `ros2 param set N palette '[]'` sends an empty BOOL_ARRAY; it was refused as the wrong type
    node = make_node(palette=[1, 2, 3])
    assert node.set_parameters([Parameter('palette', Parameter.Type.BOOL_ARRAY, [])])[0].successful
    assert read_settings(node, Toy).palette == []
    # only an EMPTY array is retyped: values of another type are refused, never taken for []
    assert node.set_parameters([Parameter('palette', value=[7])])[0].successful
    assert not node.set_parameters([Parameter('palette', Parameter.Type.BOOL_ARRAY, [True])])[0].successful
    assert not node.set_parameters([Parameter('palette', Parameter.Type.DOUBLE_ARRAY, [1.0])])[0].successful
    assert read_settings(node, Toy).palette == [7]
    # and only for an array setting; a refused set is an answer, not an exception in the node's parameter service
    assert not node.set_parameters([Parameter('transport', Parameter.Type.BOOL_ARRAY, [])])[0].successful
    assert read_settings(node, Toy).transport == 'raw'


def test_start_up_settings_are_read_only_only_when_asked(make_node):
    # the lifecycle segmenter takes start-up settings while inactive: they stay writable by default
    node = make_node()
    assert not node.describe_parameter('transport').read_only
    assert all(r.successful for r in node.set_parameters([Parameter('transport', value='compressed'),
                                                          Parameter('cameras', value=['front'])]))
    fixed = make_node(read_only=True)
    for name, value in (('transport', 'compressed'), ('cameras', ['front'])):
        assert fixed.describe_parameter(name).read_only, name
        assert not fixed.set_parameters([Parameter(name, value=value)])[0].successful, name
    assert read_settings(fixed, Toy).cameras == []
    assert not fixed.describe_parameter('alpha').read_only   # live settings stay writable
    assert fixed.set_parameters([Parameter('alpha', value=0.25)])[0].successful


def test_changes_are_validated_against_the_settings(make_node):
    node = make_node()
    ok, changes = validate_changes(node, [Parameter('transport', value='compressed')], Toy)
    assert ok.successful and changes == {'transport': 'compressed'}
    bad, _ = validate_changes(node, [Parameter('input_hw', value=[96])], Toy)
    assert not bad.successful and 'input_hw' in bad.reason
    bad, _ = validate_changes(node, [Parameter('palette', value=[0, 300])], Toy)
    assert not bad.successful and '300' in bad.reason


def test_keep_last_qos_is_the_depth_and_reliability_asked():
    # input_depth 1 is "always segment the newest frame": never deepened
    one = keep_last_qos('best_effort', 1)
    assert (one.depth, one.reliability, one.history) == (1, ReliabilityPolicy.BEST_EFFORT, HistoryPolicy.KEEP_LAST)
    deep = keep_last_qos('reliable', 1000)
    assert (deep.depth, deep.reliability) == (1000, ReliabilityPolicy.RELIABLE)


def test_publishers_dds_did_not_match_are_counted(make_node):
    node = make_node()
    sub = node.create_subscription(String, 'unmatched_probe', lambda m: None,
                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    node.create_publisher(String, 'unmatched_probe', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    wait_until(lambda: sub.get_publisher_count() == 1, 30, 'the compatible publisher matched')
    assert unmatched_publishers(node, sub, 'std_msgs/msg/String') == 0
    node.create_publisher(String, 'unmatched_probe', QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    wait_until(lambda: len(node.get_publishers_info_by_topic(sub.topic_name)) == 2, 30, 'the graph showing both')
    assert sub.get_publisher_count() == 1   # a best-effort writer never matches a reliable reader
    assert unmatched_publishers(node, sub, 'std_msgs/msg/String') == 1
    assert unmatched_publishers(node, sub, 'sensor_msgs/msg/Image') == 0   # publishers of another type: not ours
