"""segment_lifecycle_node's failed transitions, driven through its lifecycle services as `ros2 lifecycle set` does
(a real node process, real FastDDS): the node stays where it was, says why in one line, leaves nothing behind,
and takes the transition once the cause is fixed."""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from support.ros_helpers import Lifecycle, ServiceCaller, call_service, image_msg, stamp_of

LIFECYCLE = 'vidseg_ros.ros.segment_lifecycle_node'
NODE = '/vidseg_segmenter'
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 32], 'input_reliability': 'reliable',
          'diagnostics_period_s': 0.3}


def change(probe, node, tid: int) -> bool:
    """`ros2 lifecycle set`: the node's answer (success) to transition ``tid``."""
    request = ChangeState.Request(transition=Transition(id=tid))
    return ServiceCaller(probe, node).call(ChangeState, f'{NODE}/change_state', request).success


def set_param(probe, node, name: str, value) -> None:
    answer = call_service(probe, node, SetParameters, f'{NODE}/set_parameters', SetParameters.Request(
        parameters=[Parameter(name, value=value).to_parameter_msg()]))
    assert answer.results[0].successful, answer.results[0].reason


def lines_with(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def test_a_configure_that_fails_says_why_stays_unconfigured_and_configures_once_fixed(start_node, probe, tmp_path):
    missing = tmp_path / 'missing.pt'
    node = start_node(LIFECYCLE, {**PARAMS, 'model': str(missing), 'cameras': ['front']})
    lifecycle = Lifecycle(probe, node)
    arrays = probe.collect(DiagnosticArray, '/diagnostics', RELIABLE)
    assert not change(probe, node, Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == 'unconfigured'
    log = node.log()
    assert lines_with(log, '[ERROR]') == lines_with(log, 'configure failed:'), log[-3000:]
    (line,) = lines_with(log, 'configure failed:')
    assert f'model file not found: {missing}' in line, line
    set_param(probe, node, 'model', 'untrained:keyframe_fpn')   # the cause fixed: configure loads it
    lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    probe.wait_for(lambda: any(s.hardware_id == 'front' and s.level != DiagnosticStatus.STALE
                               for a in list(arrays) for s in a.status), 30, 'front served', node)
    # shut down while active: the camera's last status says so, its topics go, the node is finalized
    assert change(probe, node, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert lifecycle.state() == 'finalized'
    probe.wait_for(lambda: [(s.level, s.message) for a in list(arrays)[-1:] for s in a.status
                            if s.hardware_id == 'front'] == [(DiagnosticStatus.STALE, 'inactive: shut down')],
                   10, "the last status 'inactive: shut down'", node)
    probe.wait_for(lambda: probe.node.count_subscribers('/front/image') == 0, 20, 'the camera unsubscribed', node)
    assert 'Traceback' not in node.log(), node.log()[-3000:]


def test_an_activate_that_fails_leaves_no_topics_behind_and_activates_once_fixed(start_node, probe):
    """A camera namespace too long for ROS's topic names passes the `cameras` check (the node's own name and
    namespace add to it): activate failed on its topics with those of the cameras before it (here front) already
    created, and left them behind. They stayed for good: two subscriptions and publishers on front's topics after
    the next activate, one after deactivate, and the message named no camera."""
    long = 'c' * 225
    node = start_node(LIFECYCLE, {**PARAMS, 'cameras': ['front', long]})
    lifecycle = Lifecycle(probe, node)
    masks = probe.collect(Image, f'{NODE}/front/mask', RELIABLE)
    lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert not change(probe, node, Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == 'inactive'
    log = node.log()
    (line,) = lines_with(log, 'activate failed:')
    assert f"cameras: '{long[:40]}'" in line and 'ROS refuses' in line and 'topic length' in line, line
    assert len(line) < 400 and 'Traceback' not in log, log[-3000:]
    set_param(probe, node, 'cameras', ['front', 'rear'])   # the cause fixed (allowed while inactive)
    lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    count = probe.node.count_subscribers
    probe.wait_for(lambda: count('/rear/image') == 1 and count('/front/image') >= 1, 30, 'both cameras', node)
    time.sleep(1.0)   # entities of an earlier activation are long discovered by now
    assert (count('/front/image'), probe.node.count_publishers(f'{NODE}/front/mask'), count(f'/{long}/image')) \
        == (1, 1, 0)
    (pub,) = probe.publishers(node, '/front/image', msg_type=Image)
    stamp = time.time_ns()
    pub.publish(image_msg(np.zeros((32, 32, 3), np.uint8), stamp))
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in list(masks)), 60, 'the mask of the frame', node)
    lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    probe.wait_for(lambda: count('/front/image') == count('/rear/image') == 0
                   and probe.node.count_publishers(f'{NODE}/front/mask') == 0, 20, 'no camera topics left', node)


def test_a_signal_while_activate_loads_a_model_set_while_inactive_ends_the_node_at_once(start_node, probe,
                                                                                       monkeypatch):
    """`ros2 param set model` while inactive loads on activate, in the main thread; a SIGTERM then must not wait
    for the load (launch escalates to SIGKILL after 10 s): activate answers failed, the node exits 0 at once."""
    import signal
    from pathlib import Path
    monkeypatch.setenv('PYTHONPATH', str(Path(__file__).parent))
    monkeypatch.setenv('VIDSEG_STUCK_NODE', 'segment_lifecycle_node')
    monkeypatch.setenv('VIDSEG_STUCK_LOAD', '60')
    monkeypatch.setenv('VIDSEG_STUCK_LOAD_MODEL', 'untrained:recurrent_unet')   # only the model set later
    node = start_node('stuck_node', PARAMS)
    lifecycle = Lifecycle(probe, node)
    lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    set_param(probe, node, 'model', 'untrained:recurrent_unet')
    client = lifecycle.client(ChangeState, f'{NODE}/change_state')
    answer = client.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
    probe.wait_for(lambda: 'loading for 60' in node.log(), 60, 'the load of the new model', node)
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(30)
    took, log = time.monotonic() - t0, node.log()
    assert node.proc.returncode == 0 and took < 4.0, f'{took:.1f} s, status {node.proc.returncode}:\n{log[-3000:]}'
    assert "stopping while loading model 'untrained:recurrent_unet': not waiting for the load" in log, log[-3000:]
    assert 'Traceback' not in log and '[ERROR]' not in log and 'serving camera' not in log, log[-3000:]
    probe.wait_for(lambda: answer.done(), 10, 'the answer to activate')
    assert not answer.result().success
