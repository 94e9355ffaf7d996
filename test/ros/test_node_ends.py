"""How the nodes end: the last /diagnostics status, and an exit that stays within launch's patience.

- Deactivate (lifecycle) stopped /diagnostics without a last word: monitors kept the last periodic status for
  good, an ERROR 'stuck' among them. Each served camera's last status is now STALE 'inactive: ...', on
  deactivate and when the node stops.
- A worker stuck on a frame held the exit STOP_WAIT_S (10 s, measured 10.5 s after SIGINT): ros2 launch sends
  SIGTERM 5 s after SIGINT and SIGKILL 5 s later. The exit now waits EXIT_WAIT_S (2 s) for it, says in one line
  which camera and stage it is on (or which model it loads), and ends with status 0.
- A model load (start-up, configure) held a SIGINT until it ended (torch.compile: 42 s): the wait is interrupted.
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.srv import SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from support.ros_helpers import IN_PROCESS, image_msg, spun

from vidseg_ros.ros.segment_lifecycle_node import SegmentLifecycleNode

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 32], 'input_reliability': 'reliable',
          'diagnostics_period_s': 0.2, 'publish_overlay': False, 'publish_color_mask': False,
          'publish_confidence': False}
SUCCESS = TransitionCallbackReturn.SUCCESS
STALE = DiagnosticStatus.STALE


def statuses(arrays, prefix: str) -> list[DiagnosticStatus]:
    """Every status whose name starts with ``prefix``, in the order received."""
    return [s for a in list(arrays) for s in a.status if s.name.startswith(prefix)]


def last_by_camera(arrays, prefix: str) -> dict[str, DiagnosticStatus]:
    return {s.hardware_id: s for s in statuses(arrays, prefix)}


@pytest.fixture
def lifecycle_segmenter():
    """segment_lifecycle_node's node (cameras front and rear) in this process, spun in a thread."""
    overrides = [Parameter(k, value=v) for k, v in {**PARAMS, 'cameras': ['front', 'rear']}.items()]
    with spun(lambda context: SegmentLifecycleNode(IN_PROCESS, context=context,
                                                   parameter_overrides=overrides)) as node:
        yield node


def test_deactivate_leaves_a_stale_status_per_camera_as_the_last_word(lifecycle_segmenter, probe):
    """Before: after deactivate the last status of each camera stayed whatever the timer published last."""
    node = lifecycle_segmenter
    arrays = probe.collect(DiagnosticArray, '/diagnostics', RELIABLE)
    prefix = f'/{IN_PROCESS}: '
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    probe.wait_for(lambda: set(last_by_camera(arrays, prefix)) == {'front', 'rear'}, 30, 'both cameras on /diagnostics')
    assert node.trigger_deactivate() == SUCCESS
    probe.wait_for(lambda: all(s.level == STALE for s in last_by_camera(arrays, prefix).values()), 10,
                   'a STALE status per camera after deactivate')
    seen = len(statuses(arrays, prefix))
    time.sleep(5 * PARAMS['diagnostics_period_s'])   # the timer is gone: nothing follows the last status
    assert len(statuses(arrays, prefix)) == seen
    for camera, st in last_by_camera(arrays, prefix).items():
        assert st.message == 'inactive: deactivated', st.message
        assert st.name == f'/{IN_PROCESS}: {camera}'   # the same name as its periodic statuses: it replaces them
        assert {kv.key for kv in st.values} >= {'camera', 'frames_in', 'frames_out'}
    assert sum(s.level == STALE for s in statuses(arrays, prefix)) == 2   # one per camera, once
    assert node.trigger_cleanup() == SUCCESS
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS   # back: periodic again
    probe.wait_for(lambda: all(s.level != STALE for s in last_by_camera(arrays, prefix).values()), 30,
                   'periodic statuses after activate')


@pytest.fixture
def stuck_node(start_node, monkeypatch):
    """test/ros/stuck_node.py: segment_node (or the lifecycle one) whose step blocks on frame_id 'block'."""
    monkeypatch.setenv('PYTHONPATH', str(Path(__file__).parent))

    def start(which='segment_node', **params):
        monkeypatch.setenv('VIDSEG_STUCK_NODE', which)
        return start_node('stuck_node', {**PARAMS, **params})
    return start


def exit_time(node, sig=signal.SIGINT, timeout: float = 30.0) -> float:
    """Seconds from ``sig`` to the process's exit."""
    t0 = time.monotonic()
    node.proc.send_signal(sig)
    try:
        node.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f'still running {timeout:.0f} s after {sig.name}:\n{node.log()[-3000:]}') from None
    return time.monotonic() - t0


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['sigint', 'sigterm'])
def test_a_worker_stuck_on_a_frame_delays_the_exit_2_s_not_10(stuck_node, probe, sig):
    node = stuck_node()
    arrays = probe.collect(DiagnosticArray, '/diagnostics', RELIABLE)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    pub.publish(image_msg(np.zeros((32, 32, 3), np.uint8), time.time_ns(), 'block'))
    probe.wait_for(lambda: 'step blocked' in node.log(), 30, 'the step to block', node)
    took = exit_time(node, sig)
    log = node.log()
    assert node.proc.returncode == 0, log[-3000:]
    assert took < 4.0, f'{took:.1f} s from {sig.name} to exit (launch escalates after 5 s):\n{log[-3000:]}'
    lines = [line for line in log.splitlines() if 'exiting without waiting longer for the inference worker' in line]
    assert len(lines) == 1 and "still on a frame of camera 'image' (engine step) for " in lines[0], log[-3000:]
    assert 'Traceback' not in log and 'terminate called' not in log, log[-3000:]
    # its last status says so, the worker's frame never went out
    probe.wait_for(lambda: (st := last_by_camera(arrays, '/vidseg_segmenter: ').get('image')) is not None
                   and st.level == STALE, 10, 'the STALE status sent before the exit')
    assert last_by_camera(arrays, '/vidseg_segmenter: ')['image'].message == 'inactive: node stopped'


def configure_async(probe, node_name: str = '/vidseg_segmenter'):
    """Ask ``node_name`` to configure (lifecycle_msgs ChangeState), without waiting for the answer."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    client = probe.node.create_client(ChangeState, f'{node_name}/change_state')
    assert client.wait_for_service(timeout_sec=30), f'{node_name} offers no change_state'
    return client.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))


@pytest.mark.parametrize('which,sig', [('segment_node', signal.SIGINT), ('segment_lifecycle_node', signal.SIGTERM)],
                         ids=['segment_node-sigint', 'lifecycle_configure-sigterm'])
def test_a_signal_during_a_long_model_load_ends_the_node_at_once(stuck_node, probe, monkeypatch, which, sig):
    """The load ran in the main thread (start-up, configure), which saw the signal only after it: a 42 s
    torch.compile warm-up held Ctrl-C 42 s, and ros2 launch logged 'failed to terminate', escalated to SIGTERM
    (ignored) and killed the node at 10 s. Now the wait for the load is interrupted: exit 0 at once, one line."""
    monkeypatch.setenv('VIDSEG_STUCK_LOAD', '60')
    node = stuck_node(which)
    if which == 'segment_lifecycle_node':
        answer = configure_async(probe)
    probe.wait_for(lambda: 'loading for 60' in node.log(), 60, 'the model load to start', node)
    took = exit_time(node, sig)
    log = node.log()
    assert node.proc.returncode == 0 and took < 4.0, f'{took:.1f} s, status {node.proc.returncode}:\n{log[-3000:]}'
    assert "stopping while loading model 'untrained:keyframe_fpn': not waiting for the load" in log, log[-3000:]
    assert 'Traceback' not in log and 'serving camera' not in log, log[-3000:]
    if which == 'segment_lifecycle_node':   # the transition was answered (failed), not left hanging
        probe.wait_for(lambda: answer.done(), 10, 'the answer to configure')
        assert not answer.result().success


def test_a_signal_while_a_model_change_loads_in_the_worker_exits_within_2_s(stuck_node, probe, monkeypatch):
    """`ros2 param set model` just before Ctrl-C: the worker loads the new model (seconds on a CPU) and the exit
    waited up to STOP_WAIT_S (10 s) for a model it would drop. Now 2 s, one WARN line naming the model."""
    monkeypatch.setenv('VIDSEG_STUCK_LOAD', '60')
    monkeypatch.setenv('VIDSEG_STUCK_LOAD_MODEL', 'untrained:recurrent_unet')
    node = stuck_node()
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    ros2_param_set = probe.node.create_client(SetParameters, '/vidseg_segmenter/set_parameters')
    assert ros2_param_set.wait_for_service(timeout_sec=30)
    answer = ros2_param_set.call_async(SetParameters.Request(
        parameters=[Parameter('model', value='untrained:recurrent_unet').to_parameter_msg()]))
    probe.wait_for(lambda: answer.done(), 30, 'the answer to the parameter change', node)
    assert answer.result().results[0].successful
    pub.publish(image_msg(np.zeros((32, 32, 3), np.uint8), time.time_ns()))   # the worker loads before this frame
    probe.wait_for(lambda: 'loading for 60' in node.log(), 30, 'the worker to load the new model', node)
    took = exit_time(node)
    log = node.log()
    assert node.proc.returncode == 0 and took < 4.0, f'{took:.1f} s, status {node.proc.returncode}:\n{log[-3000:]}'
    assert ("exiting without waiting longer for the inference worker, still loading model 'untrained:recurrent_unet' "
            "for ") in log, log[-3000:]
    assert '[ERROR]' not in log and 'Traceback' not in log, log[-3000:]
