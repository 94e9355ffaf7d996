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
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.srv import SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from support.ros_helpers import IN_PROCESS, Lifecycle, call_service, image_msg, spun

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
    answer = call_service(probe, node, SetParameters, '/vidseg_segmenter/set_parameters', SetParameters.Request(
        parameters=[Parameter('model', value='untrained:recurrent_unet').to_parameter_msg()]))
    assert answer.results[0].successful
    pub.publish(image_msg(np.zeros((32, 32, 3), np.uint8), time.time_ns()))   # the worker loads before this frame
    probe.wait_for(lambda: 'loading for 60' in node.log(), 30, 'the worker to load the new model', node)
    took = exit_time(node)
    log = node.log()
    assert node.proc.returncode == 0 and took < 4.0, f'{took:.1f} s, status {node.proc.returncode}:\n{log[-3000:]}'
    assert ("exiting without waiting longer for the inference worker, still loading model 'untrained:recurrent_unet' "
            "for ") in log, log[-3000:]
    assert '[ERROR]' not in log and 'Traceback' not in log, log[-3000:]


def start_recorder(tmp_path, hangup, **params) -> subprocess.Popen:
    """recorder_node recording /ends/image into tmp_path/bags, started with SIGHUP at ``hangup`` (SIG_DFL as from
    a terminal, SIG_IGN as under nohup); its output goes to tmp_path/recorder.log."""
    import os
    import sys

    def signals():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, hangup)
    args = [sys.executable, '-m', 'vidseg_ros.ros.recorder_node', '--ros-args', '-p', 'topics:=[/ends/image]',
            '-p', f'output_dir:={tmp_path / "bags"}', '-p', 'min_free_disk_bytes:=0', '-p', 'bag_prefix:=ends',
            *[a for k, v in params.items() for a in ('-p', f'{k}:={v}')]]
    return subprocess.Popen(args, stdout=open(tmp_path / 'recorder.log', 'w'), stderr=subprocess.STDOUT,
                            env=os.environ.copy(), cwd=str(Path(__file__).parents[2]), preexec_fn=signals)


def test_a_closed_terminal_sighup_closes_the_recorders_bag_with_every_message(tmp_path, probe):
    """SIGHUP (the terminal closed, ssh dropped) ended the recorder at once with its default action: status -1,
    no metadata.yaml, and the messages of a topic still settling (held in memory: its first 3+ s) were lost
    with it; here the bag folder had no .mcap at all. Now it stops as on Ctrl-C (the messages, published in a
    burst just before, are all taken: the drain of test_messages_delivered_before_a_sigint_are_all_in_the_bag)."""
    from vidseg_ros.data.bags.reader import deserialize, read_messages
    rec = start_recorder(tmp_path, signal.SIG_DFL)
    log = tmp_path / 'recorder.log'
    try:
        pub = probe.node.create_publisher(Image, '/ends/image', RELIABLE)
        probe.wait_for_subscribers(pub, timeout=60)
        for i in range(20):
            pub.publish(image_msg(np.full((24, 32, 3), i, np.uint8), (i + 1) * 10**9, 'ends'))
        probe.wait_for(lambda: 'recording /ends/image' not in log.read_text(), 1, 'nothing')  # still settling
        rec.send_signal(signal.SIGHUP)
        rec.wait(30)
    finally:
        if rec.poll() is None:
            rec.kill()
    text = log.read_text()
    assert rec.returncode == 0 and 'bag closed' in text, f'status {rec.returncode}:\n{text[-3000:]}'
    (bag,) = (tmp_path / 'bags').iterdir()
    warnings: list = []
    stamps = [deserialize(m).header.stamp.sec for m in read_messages(bag, warnings=warnings)]
    assert stamps == list(range(1, 21)) and warnings == [] and (bag / 'metadata.yaml').is_file(), (stamps, warnings)


@pytest.mark.parametrize('camera_goes_on', [False, True], ids=['burst', 'burst_then_200hz'])
def test_messages_delivered_before_a_sigint_are_all_in_the_bag(tmp_path, probe, camera_goes_on):
    """The spin loop ended at the signal and close() destroyed the subscriptions with the messages DDS had
    delivered to them but the executor not handed over: 50 images published in a burst just before a SIGINT,
    1 recorded, the others lost without a count. A camera that goes on publishing does not hold the close."""
    import threading
    from vidseg_ros.data.bags.reader import deserialize, read_messages
    rec = start_recorder(tmp_path, signal.SIG_DFL)
    log = tmp_path / 'recorder.log'
    pub = probe.node.create_publisher(Image, '/ends/image', RELIABLE)
    stop = threading.Event()

    def camera(i=50):
        while not stop.wait(0.005):
            pub.publish(image_msg(np.zeros((24, 32, 3), np.uint8), (i + 1) * 10**9, 'ends'))
            i += 1
    try:
        probe.wait_for_subscribers(pub, timeout=60)
        pub.publish(image_msg(np.zeros((24, 32, 3), np.uint8), 10**9, 'ends'))
        probe.wait_for(lambda: 'recording /ends/image' in log.read_text(), 60, 'the topic recorded (settled)')
        for i in range(1, 50):
            pub.publish(image_msg(np.zeros((24, 32, 3), np.uint8), (i + 1) * 10**9, 'ends'))
        if camera_goes_on:
            threading.Thread(target=camera, daemon=True).start()
        took = exit_time(SimpleNamespace(proc=rec, log=log.read_text))
    finally:
        stop.set()
        if rec.poll() is None:
            rec.kill()
    assert rec.returncode == 0 and took < 4.0, f'{took:.1f} s, status {rec.returncode}:\n{log.read_text()[-3000:]}'
    (bag,) = (tmp_path / 'bags').iterdir()
    stamps = [deserialize(m).header.stamp.sec for m in read_messages(bag)]
    assert stamps[:50] == list(range(1, 51)), stamps[:60]


def test_under_nohup_sighup_stays_ignored(tmp_path, probe):
    rec = start_recorder(tmp_path, signal.SIG_IGN)
    log = tmp_path / 'recorder.log'
    try:
        probe.wait_for(lambda: 'recording to' in log.read_text(), 60, 'the recorder to start')
        rec.send_signal(signal.SIGHUP)
        time.sleep(1.0)   # a node that took SIGHUP as a stop is gone by now (closing an empty bag: ~0.1 s)
        assert rec.poll() is None, log.read_text()[-3000:]
        rec.send_signal(signal.SIGINT)
        assert rec.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if rec.poll() is None:
            rec.kill()


def change_state_async(probe, transition: int, node_name: str = '/vidseg_segmenter'):
    """Ask ``node_name`` for a transition without waiting for the answer (a test that waits uses Lifecycle)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    client = probe.node.create_client(ChangeState, f'{node_name}/change_state')
    assert client.wait_for_service(timeout_sec=30), f'{node_name} offers no change_state'
    return client.call_async(ChangeState.Request(transition=Transition(id=transition)))


def test_a_signal_while_deactivate_waits_for_a_stuck_frame_exits_within_2_s(stuck_node, probe):
    """deactivate waits STOP_WAIT_S (10 s) for the frame in the worker, in the executor's thread: a Ctrl-C then was
    seen after it, and the exit waited 2 s more (12 s: ros2 launch escalates at 5 s)."""
    from lifecycle_msgs.msg import Transition
    node = stuck_node('segment_lifecycle_node')
    lifecycle = Lifecycle(probe, node)   # a lost answer is looked up
    lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    pub.publish(image_msg(np.zeros((32, 32, 3), np.uint8), time.time_ns(), 'block'))
    probe.wait_for(lambda: 'step blocked' in node.log(), 30, 'the step to block', node)
    change_state_async(probe, Transition.TRANSITION_DEACTIVATE)
    time.sleep(1.0)   # the deactivate is waiting for the frame (were it not yet, the exit is as quick)
    took = exit_time(node)
    log = node.log()
    assert node.proc.returncode == 0 and took < 4.0, f'{took:.1f} s, status {node.proc.returncode}:\n{log[-3000:]}'
    assert 'Traceback' not in log, log[-3000:]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['ctrl_c', 'sigterm'])
def test_the_demo_stopped_mid_run_says_so_in_one_line_and_stops_its_nodes(tmp_path, real_frames, sig):
    """Ctrl-C in the demo's terminal (SIGINT to its process group) printed a KeyboardInterrupt traceback from
    rclpy's wait set and exited -2; SIGTERM to the demo ended it at once, without stopping its nodes itself."""
    import os
    import sys

    import cv2
    import psutil
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i, rgb in enumerate(real_frames):
        cv2.imwrite(str(frames / f'{i:04d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / 'out'
    demo = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.ros.demo', '--video', str(frames), '--rate', '2',
                             '--out', str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).parents[2]), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / 'video_source.log').is_file() or 'publishing' not in (out / 'video_source.log').read_text():
            assert demo.poll() is None and time.monotonic() < deadline, demo.communicate()
            time.sleep(0.1)
        nodes = psutil.Process(demo.pid).children()
        assert len(nodes) == 3
        (os.killpg if sig == signal.SIGINT else os.kill)(demo.pid, sig)   # a terminal's Ctrl-C, a kill
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 130 and err.strip() == f'demo: interrupted; node logs and what was recorded are in ' \
                                                     f'{out}', (demo.returncode, err[-3000:])
    assert not [n for n in nodes if n.is_running() and n.status() != psutil.STATUS_ZOMBIE]
    (bag,) = out.glob('drive_*')
    assert (bag / 'metadata.yaml').is_file()


def test_the_recorders_last_diagnostics_say_stopped(tmp_path, probe):
    """Its statuses stopped with the node: monitors kept 'recording, 0.1 MB/s' (OK) for good. Now the last ones
    are STALE: 'stopped: bag closed' and per topic 'stopped: <type>'."""
    arrays = probe.collect(DiagnosticArray, '/diagnostics', RELIABLE)
    rec = start_recorder(tmp_path, signal.SIG_DFL, diagnostics_period_s=0.2)
    log = tmp_path / 'recorder.log'
    try:
        pub = probe.node.create_publisher(Image, '/ends/image', RELIABLE)
        probe.wait_for_subscribers(pub, timeout=60)
        pub.publish(image_msg(np.zeros((24, 32, 3), np.uint8), 10**9, 'ends'))
        probe.wait_for(lambda: '/vidseg_recorder: /ends/image' in last_by_name(arrays), 60, 'the topic on /diagnostics')
        took = exit_time(SimpleNamespace(proc=rec, log=log.read_text))
    finally:
        if rec.poll() is None:
            rec.kill()
    assert rec.returncode == 0 and took < 4.0, log.read_text()[-3000:]
    probe.wait_for(lambda: last_by_name(arrays)['/vidseg_recorder'].level == STALE, 10, 'the STALE status')
    last = last_by_name(arrays)
    assert last['/vidseg_recorder'].message == 'stopped: bag closed'
    assert (last['/vidseg_recorder: /ends/image'].level, last['/vidseg_recorder: /ends/image'].message) == \
        (STALE, 'stopped: sensor_msgs/msg/Image')
    assert {kv.key: kv.value for kv in last['/vidseg_recorder'].values}['messages_written'] == '1'


def last_by_name(arrays) -> dict[str, DiagnosticStatus]:
    return {s.name: s for a in list(arrays) for s in a.status}


def test_what_the_worker_is_on_is_said_with_its_camera_stage_or_model():
    from vidseg_ros.ros.health import worker_activity
    assert worker_activity((10.0, 'front', 'engine step'), None, 13.2) == \
        "on a frame of camera 'front' (engine step) for 3 s"
    assert worker_activity(None, (10.0, 'untrained:recurrent_unet'), 12.0) == \
        "loading model 'untrained:recurrent_unet' for 2 s"
    assert worker_activity(None, None, 1.0) == 'between frames'
    hostile = worker_activity((0.0, 'rear\x1b]0;x\x07' + 'r' * 500, ''), None, 1.0)   # a namespace: no limit
    assert '\x1b' not in hostile and len(hostile) < 160, hostile
