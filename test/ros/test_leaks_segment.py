"""segment_node / segment_lifecycle_node under repetition (real rclpy + FastDDS): lifecycle cycles while frames
flow and model switches must not leave threads, file descriptors, DDS entities or rclpy objects behind."""
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from support.ros_helpers import image_msg, node_entities, process_resources  # noqa: E402

LIFECYCLE = 'vidseg_ros.ros.segment_lifecycle_node'
SMALL = {'model': 'untrained:keyframe_fpn', 'input_hw': [64, 96], 'diagnostics_period_s': 0.3,
         'cameras': ['front', 'rear'], 'use_camera_info': True}
NODE = 'vidseg_segmenter'


def test_lifecycle_cycles_while_frames_flow_keep_threads_fds_and_entities_flat(start_node, probe):
    """10 configure/activate/deactivate/cleanup cycles with two cameras sending: after the first two cycles
    the process holds the same threads, open files and graph entities (RSS: flat within ~1 MB, not asserted)."""
    import numpy as np
    node = start_node(LIFECYCLE, SMALL)
    masks = probe.collect(Image, f'/{NODE}/front/mask')
    pubs = [probe.node.create_publisher(Image, f'{cam}/image', 10) for cam in SMALL['cameras']]
    rgb = np.zeros((48, 64, 3), np.uint8)
    client = probe.node.create_client(ChangeState, f'/{NODE}/change_state')
    probe.wait_for(client.service_is_ready, 60, 'change_state service', node)

    def transition(tid):
        future = client.call_async(ChangeState.Request(transition=Transition(id=tid)))
        probe.wait_for(future.done, 60, f'transition {tid}', node)
        assert future.result().success, node.log()[-2000:]

    samples = []
    for cycle in range(10):
        transition(Transition.TRANSITION_CONFIGURE)
        transition(Transition.TRANSITION_ACTIVATE)
        n = len(masks)
        deadline = time.monotonic() + 30
        while len(masks) <= n and time.monotonic() < deadline:   # frames flow until a mask comes back
            for pub in pubs:
                pub.publish(image_msg(rgb, time.time_ns()))
            time.sleep(0.05)
        assert len(masks) > n, node.log()[-2000:]
        transition(Transition.TRANSITION_DEACTIVATE)
        transition(Transition.TRANSITION_CLEANUP)
        if cycle >= 2:
            samples.append((process_resources(node.proc.pid), node_entities(probe, NODE)))
    threads = [r['threads'] for r, _ in samples]
    fds = [r['fds'] for r, _ in samples]
    assert max(threads) == min(threads) and max(fds) == min(fds), samples
    assert all(e == samples[0][1] for _, e in samples), samples
