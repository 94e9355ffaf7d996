"""The core's log lines (engine, bag writer) come out as the node's ROS log lines, on the console and on /rosout.

Before: "model keyframe_fpn has random weights ..." was a bare stderr line (Python's last-resort handler: no level,
no node name, nothing on /rosout for rqt_console), and the writer's INFO lines ("recording to <file>", "closed
<file>") were dropped."""
from __future__ import annotations

import time

import numpy as np
from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger
from support.ros_helpers import call_service, image_msg

ROSOUT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_the_engines_warning_is_the_segmenters_on_the_console_and_on_rosout(start_node, probe):
    rosout = probe.collect(Log, '/rosout', ROSOUT_QOS)
    node = start_node('vidseg_ros.ros.segment_node', {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 32]})
    probe.wait_for(lambda: 'serving camera' in node.log(), 120, 'the segmenter to serve', node)
    line = next((x for x in node.log().splitlines() if 'has random weights' in x), None)
    assert line is not None and line.startswith('[WARN]') and '[vidseg_segmenter]' in line, node.log()[-3000:]
    probe.wait_for(lambda: any(m.name == 'vidseg_segmenter' and 'has random weights' in m.msg and m.level == Log.WARN
                               for m in rosout), 30, 'the warning on /rosout', node)


def test_the_bag_writers_lines_are_the_recorders(start_node, probe, tmp_path):
    node = start_node('vidseg_ros.ros.recorder_node', {'output_dir': str(tmp_path), 'topics': ['/core_log/image'],
                                                       'discovery_period_s': 0.2, 'min_free_disk_bytes': 0})
    (pub,) = probe.publishers(node, '/core_log/image', msg_type=Image)
    frame = np.zeros((8, 8, 3), np.uint8)
    pub.publish(image_msg(frame, time.time_ns()))
    probe.wait_for(lambda: '.mcap' in node.log(), 30, "the writer's first file", node)
    call_service(probe, node, Trigger, '/vidseg_recorder/split', Trigger.Request(), lost_ok=True)
    probe.wait_for(lambda: 'closed ' in node.log(), 30, "the writer's closed line", node)
    lines = [x for x in node.log().splitlines() if '.mcap' in x and ('recording to' in x or 'closed ' in x)]
    assert len(lines) == 2 and all(x.startswith('[INFO]') and '[vidseg_recorder]' in x for x in lines), lines
