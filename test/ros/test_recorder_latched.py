"""recorder_node and latched (transient_local) topics, real nodes and DDS: /tf_static published before the
recorder joins must be in the bag (a replay without it lacks every static transform)."""
from __future__ import annotations

from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, QoSProfile
from rosbags.highlevel import AnyReader

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)   # as static_transform_publisher


def _recorder(start_node, tmp_path: Path):
    return start_node('vidseg_ros.ros.recorder_node', {
        'topics': [], 'topic_regex': '^/tf_static$', 'output_dir': str(tmp_path), 'bag_prefix': 'latched',
        'min_free_disk_bytes': 0, 'discovery_period_s': 0.2, 'diagnostics_period_s': 0.3})


def _static(probe, child: str):
    """One static transform publisher (its own DDS writer) that has published before any recorder exists."""
    pub = probe.node.create_publisher(TransformStamped, '/tf_static', LATCHED)
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = 'base_link', child
    pub.publish(msg)
    return pub


def test_static_transforms_published_before_the_recorder_started_are_in_the_bag(start_node, probe, tmp_path):
    """Two static publishers, each with its one transform sent before the recorder existed. The subscription
    was volatile: the bag listed /tf_static with 0 messages."""
    pubs = [_static(probe, 'camera'), _static(probe, 'lidar')]
    node = _recorder(start_node, tmp_path)
    for pub in pubs:
        probe.wait_for_subscribers(pub, proc=node, timeout=30)
    probe.wait_for(lambda: 'recording /tf_static' in node.log(), 30, 'the type of /tf_static settled', node)
    assert node.stop() == 0, node.log_path.read_text()[-3000:]
    (bag,) = tmp_path.glob('latched_*')
    with AnyReader([bag]) as reader:
        children = sorted(reader.deserialize(raw, conn.msgtype).child_frame_id
                          for conn, _, raw in reader.messages())
        durability = {q.durability.name for conn in reader.connections for q in conn.ext.offered_qos_profiles}
    assert children == ['camera', 'lidar'], node.log_path.read_text()[-3000:]
    assert durability == {'TRANSIENT_LOCAL'}


def test_a_volatile_publisher_joining_a_latched_topic_is_said_with_its_fix(start_node, probe, tmp_path):
    """The transient_local subscription cannot match a volatile publisher that comes later: said on
    /diagnostics and in the log naming the durability override, never silent."""
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    latched = _static(probe, 'camera')
    node = _recorder(start_node, tmp_path)
    probe.wait_for_subscribers(latched, proc=node, timeout=30)
    probe.node.create_publisher(TransformStamped, '/tf_static', 10)   # volatile

    def warned():
        return any(s.name.endswith(': /tf_static') and s.level == DiagnosticStatus.WARN
                   and 'QoS incompatible (DURABILITY)' in s.message for a in diags for s in a.status)
    probe.wait_for(warned, 30, 'the DURABILITY warning of /tf_static', node)
    assert 'qos_overrides./tf_static.subscription.durability:=volatile' in node.log()


def test_a_topic_whose_message_package_is_missing_is_said_on_diagnostics(probe, tmp_path, monkeypatch):
    """rclpy cannot subscribe a type whose package is not installed (nor can ros2 bag record): one ERROR line,
    then /diagnostics said OK for good while nothing of the topic was recorded. The import failing is what a
    missing package does; here it fails for std_msgs/String only."""
    from std_msgs.msg import String
    from support.ros_helpers import spun

    recorder_node = _string_package_missing(monkeypatch)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    probe.node.create_publisher(String, '/no_pkg/status', 10)
    overrides = _overrides('/no_pkg/status', tmp_path)
    with spun(lambda context: recorder_node.RecorderNode(context=context, parameter_overrides=overrides)):
        def warned():
            return any(s.name.endswith('vidseg_recorder') and s.level == DiagnosticStatus.WARN
                       and '/no_pkg/status [std_msgs/msg/String]' in s.message for a in diags for s in a.status)
        probe.wait_for(warned, 20, 'the recorder naming /no_pkg/status on /diagnostics')


def test_a_topic_whose_type_could_not_be_loaded_is_recorded_when_a_loadable_type_replaces_it(probe, tmp_path,
                                                                                          monkeypatch):
    """A topic first published with a type whose package is missing was never tried again: after that
    publisher went and one of an installed type came, nothing of the topic was recorded, while /diagnostics
    still named the old type."""
    from std_msgs.msg import Int32, String
    from support.ros_helpers import spun

    recorder_node = _string_package_missing(monkeypatch)
    topic = '/no_pkg/replaced'
    old = probe.node.create_publisher(String, topic, 10)
    overrides = _overrides(topic, tmp_path)
    with spun(lambda context: recorder_node.RecorderNode(context=context, parameter_overrides=overrides)) as node:
        probe.wait_for(lambda: topic in node.unloadable, 20, f'{topic} found unloadable')
        probe.node.destroy_publisher(old)
        # another participant: FastDDS refuses a second type for a topic name within one
        with spun(lambda context: rclpy.create_node('int32_source', context=context)) as source:
            new = source.create_publisher(Int32, topic, 10)
            probe.wait_for(lambda: node.types.get(topic) == 'std_msgs/msg/Int32', 30, f'{topic} recorded as Int32')
            assert topic not in node.unloadable
            taken = node.taken
            probe.wait_for(lambda: new.publish(Int32(data=7)) or node.taken > taken, 20, 'an Int32 taken')


def _string_package_missing(monkeypatch):
    """The recorder module, its message import failing for std_msgs/String as when its package is missing."""
    from vidseg_ros.ros import recorder_node

    real = recorder_node.message_class

    def missing(msgtype):
        if msgtype == 'std_msgs/msg/String':
            raise ModuleNotFoundError("No module named 'std_msgs'")
        return real(msgtype)
    monkeypatch.setattr(recorder_node, 'message_class', missing)
    return recorder_node


def _overrides(topic: str, out) -> list:
    return [rclpy_param('topics', [topic]), rclpy_param('output_dir', str(out)), rclpy_param('min_free_disk_bytes', 0),
            rclpy_param('discovery_period_s', 0.2), rclpy_param('diagnostics_period_s', 0.3)]


def rclpy_param(name, value):
    from rclpy.parameter import Parameter
    return Parameter(name, value=value)
