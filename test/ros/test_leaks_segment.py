"""segment_node / segment_lifecycle_node under repetition (real rclpy + FastDDS): lifecycle cycles while frames
flow and model switches must not leave threads, file descriptors, DDS entities or rclpy objects behind."""
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from lifecycle_msgs.msg import Transition  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.task import Future  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from support.ros_helpers import (Lifecycle, ServiceCaller, call_service, image_msg, node_entities,  # noqa: E402
                                 process_resources)

LIFECYCLE = 'vidseg_ros.ros.segment_lifecycle_node'
SMALL = {'model': 'untrained:keyframe_fpn', 'input_hw': [64, 96], 'diagnostics_period_s': 0.3,
         'cameras': ['front', 'rear'], 'use_camera_info': True}
NODE = 'vidseg_segmenter'


class LosesAnswers(Lifecycle):
    """A Lifecycle whose next ``lose_answers`` change_state answers never arrive (the node serves the request and
    its answer is lost, as FastDDS loses it before the node's response writer matched us), and whose next
    ``lose_requests`` change_state requests never reach the node."""

    def __init__(self, probe, node, answer_s: float):
        super().__init__(probe, node, NODE, answer_s)
        self.lose_answers = self.lose_requests = 0

    def _send(self, client, request) -> Future:
        if client is self.change and self.lose_requests:
            self.lose_requests -= 1
            return Future()   # never sent, never done
        future = client.call_async(request)
        if client is self.change and self.lose_answers:
            self.lose_answers -= 1
            client.remove_pending_request(future)
            return Future()   # never done
        return future


def test_a_lost_transition_answer_is_looked_up_not_waited_for(start_node, probe):
    """The answers to configure and cleanup lost (the node served both): each is seen done through get_state
    and sent once (a configure sent again would have been refused: inactive has no configure). The request to
    activate lost: the node still inactive, it is sent again."""
    node = start_node(LIFECYCLE, SMALL)
    lifecycle = LosesAnswers(probe, node, answer_s=3.0)
    lifecycle.lose_answers = 1
    lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert (lifecycle.sent, lifecycle.state()) == (1, 'inactive') and lifecycle.unanswered >= 1
    lifecycle.lose_requests = 1
    lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    assert (lifecycle.sent, lifecycle.state()) == (3, 'active')
    lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    lifecycle.lose_answers = 1
    lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert (lifecycle.sent, lifecycle.state()) == (5, 'unconfigured')
    assert 'unable to start transition' not in node.log().lower(), node.log()[-2000:]


class LosesEveryAnswer(ServiceCaller):
    """A ServiceCaller whose every answer is lost on the way here (the node serves each request, and logs no drop:
    it sent the answer)."""

    def __init__(self, probe, node):
        super().__init__(probe, node)
        self.sent = 0

    def _send(self, client, request) -> Future:
        self.sent += 1
        client.remove_pending_request(client.call_async(request))
        return Future()   # never done


def test_a_lost_answer_the_node_did_not_log_as_dropped_fails_and_is_not_sent_again(start_node, probe):
    """Only an answer the node's log says FastDDS dropped is asked again (idempotent) or taken as served (lost_ok):
    any other missing answer fails after answer_s, sent once, as a test waiting for the answer did before."""
    node = start_node(LIFECYCLE, SMALL)
    lossy = LosesEveryAnswer(probe, node)
    for srv_type, service, request in [(GetParameters, 'get_parameters', GetParameters.Request(names=['model'])),
                                       (Trigger, 'reset', Trigger.Request())]:
        with pytest.raises(AssertionError, match=f'/{NODE}/{service} did not answer within 2 s'):
            lossy.call(srv_type, f'/{NODE}/{service}', request, answer_s=2, lost_ok=True)
    assert lossy.sent == 2
    answer = call_service(probe, node, GetParameters, f'/{NODE}/get_parameters', GetParameters.Request(names=['model']))
    assert answer.values[0].string_value == SMALL['model'] and 'failed to send response' not in node.log()


def test_lifecycle_cycles_while_frames_flow_keep_threads_fds_and_entities_flat(start_node, probe):
    """10 configure/activate/deactivate/cleanup cycles with two cameras sending: after the first two cycles
    the process holds the same threads, open files and graph entities (RSS: flat within ~1 MB, not asserted)."""
    import numpy as np
    node = start_node(LIFECYCLE, SMALL)
    masks = probe.collect(Image, f'/{NODE}/front/mask')
    pubs = [probe.node.create_publisher(Image, f'{cam}/image', 10) for cam in SMALL['cameras']]
    rgb = np.zeros((48, 64, 3), np.uint8)
    lifecycle = Lifecycle(probe, node, NODE)

    samples = []
    for cycle in range(10):
        lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        lifecycle.transition(Transition.TRANSITION_ACTIVATE)
        n = len(masks)
        deadline = time.monotonic() + 30
        while len(masks) <= n and time.monotonic() < deadline:   # frames flow until a mask comes back
            for pub in pubs:
                pub.publish(image_msg(rgb, time.time_ns()))
            time.sleep(0.05)
        assert len(masks) > n, node.log()[-2000:]
        lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
        lifecycle.transition(Transition.TRANSITION_CLEANUP)
        if cycle >= 2:
            samples.append((process_resources(node.proc.pid), node_entities(probe, NODE)))
    threads = [r['threads'] for r, _ in samples]
    fds = [r['fds'] for r, _ in samples]
    assert max(threads) == min(threads) and max(fds) == min(fds), samples
    assert all(e == samples[0][1] for _, e in samples), samples
