"""Real camera-driver QoS against real nodes: a best-effort (sensor-data) camera meeting a reliable
subscription is never matched by DDS, and that must be said on /diagnostics, not only in one log line."""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from support.ros_helpers import diag_values, image_msg

SEGMENT = {'model': 'untrained:keyframe_fpn', 'input_hw': [64, 64], 'publish_overlay': False,
           'diagnostics_period_s': 0.3}


def _latest(diags, name_end: str):
    return next((s for a in reversed(diags) for s in a.status if s.name.endswith(name_end)), None)


def _camera(probe, topic: str):
    """A driver publishing with the sensor-data profile (best effort, depth 5), as most camera drivers do."""
    return probe.node.create_publisher(Image, topic, qos_profile_sensor_data)


def test_a_sensor_data_camera_on_a_reliable_segmenter_input_is_warned(start_node, probe):
    """input_reliability reliable and a best-effort camera: no frame ever arrives. rclpy's default said one
    generic line and /diagnostics said 'running' / 'waiting for images'; now WARN naming the fix."""
    node = start_node('vidseg_ros.ros.segment_node', {**SEGMENT, 'input_reliability': 'reliable'})
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub = _camera(probe, 'image')

    def warned():
        status = _latest(diags, ': image')
        return status is not None and 'NOT received: QoS incompatible' in status.message
    probe.wait_for(warned, 60, 'the incompatible-QoS status', node)
    status = _latest(diags, ': image')
    assert status.level == DiagnosticStatus.WARN and '1 publisher(s)' in status.message, status.message
    assert pub.get_subscription_count() == 0
    probe.wait_for(lambda: 'set input_reliability:=best_effort' in node.log(), 10, 'the log line naming the fix', node)


def test_a_sensor_data_camera_on_a_reliable_recorder_is_warned(start_node, probe, tmp_path):
    """input_reliability reliable (the default before 2 Dec 2026) and a best-effort camera: nothing recorded
    while the topic's status said OK 'sensor_msgs/msg/Image' and the recorder's 'recording' (one ERROR log line
    at discovery)."""
    node = start_node('vidseg_ros.ros.recorder_node', {'topics': ['/qa/image'], 'output_dir': str(tmp_path),
                                                       'min_free_disk_bytes': 0, 'diagnostics_period_s': 0.3,
                                                       'input_reliability': 'reliable'})
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub = _camera(probe, '/qa/image')

    def warned():
        status = _latest(diags, ': /qa/image')
        return status is not None and 'NOT recorded: QoS incompatible (RELIABILITY)' in status.message
    probe.wait_for(warned, 60, 'the incompatible-QoS status of /qa/image', node)
    topic, recorder = _latest(diags, ': /qa/image'), _latest(diags, 'vidseg_recorder')
    assert topic.level == DiagnosticStatus.WARN and diag_values(topic)['incompatible_publishers'] == '1'
    assert recorder.level == DiagnosticStatus.WARN and 'incompatible QoS NOT recorded on /qa/image' in recorder.message
    assert pub.get_subscription_count() == 0


def test_the_default_records_a_30_hz_sensor_data_camera_without_loss(start_node, probe, tmp_path):
    """The default (input_reliability auto) against a best-effort 640x480 camera at 30 Hz: every frame sent
    after the match is written (measured 180/180 at 640x480 and at 1920x1080 over 6 s, through the shipped SHM
    profile). The default was reliable before 2 Dec 2026, which recorded nothing here."""
    node = start_node('vidseg_ros.ros.recorder_node', {'topics': ['/qa/image'], 'output_dir': str(tmp_path),
                                                       'min_free_disk_bytes': 0, 'diagnostics_period_s': 0.3})
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub = _camera(probe, '/qa/image')
    probe.wait_for_subscribers(pub, proc=node, timeout=60)
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    t0 = time.monotonic()
    for i in range(60):
        pub.publish(image_msg(rgb, time.time_ns()))
        time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))

    def written():
        status = _latest(diags, ': /qa/image')
        return status is not None and diag_values(status)['messages_written'] == '60'
    probe.wait_for(written, 30, '60 messages written', node)
    values = diag_values(_latest(diags, ': /qa/image'))
    assert (values['lost'], values['incompatible_publishers']) == ('0', '0'), values
