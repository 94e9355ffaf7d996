"""segment_node under faults (issue 11): injected failures in a real process, signals, log throttling."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from support.ros_helpers import Lifecycle, diag_values, image_msg, stamp_of
from sensor_msgs.msg import Image

NODE = 'vidseg_ros.ros.segment_node'
SMALL = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'diagnostics_period_s': 0.3,
         'input_reliability': 'reliable'}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUT = '/vidseg_segmenter'


@pytest.fixture
def fault_node(start_node, monkeypatch):
    """Start test/ros/fault_node.py (segment_node with faults injected by frame_id)."""
    monkeypatch.setenv('PYTHONPATH', str(Path(__file__).parent))
    return lambda params=SMALL: start_node('fault_node', params)


def status(diags):
    for arr in reversed(diags):
        for st in arr.status:
            if st.name.endswith(': image'):
                return st
    return None


def send(probe, pub, rgb, frame_id='camera'):
    stamp = time.time_ns()
    pub.publish(image_msg(rgb, stamp, frame_id))
    return stamp


def test_any_exception_on_a_frame_is_counted_and_the_next_frame_served(fault_node, probe, real_frames):
    node = fault_node()
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    send(probe, pub, real_frames[0], 'engine_fault')   # cv2.error inside the engine
    probe.wait_for(lambda: (st := status(diags)) is not None and diag_values(st).get('errors_engine') == '1',
                   20, 'the engine error counted', node)
    stamp = send(probe, pub, real_frames[1])
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, 'mask of the next good frame', node)
    assert node.alive()
    assert 'injected OpenCV failure' in node.log()


def test_a_dead_worker_reports_error_and_the_process_exits_nonzero(fault_node, probe, real_frames):
    node = fault_node()
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    stamp = send(probe, pub, real_frames[0])
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, 'a first mask', node)
    send(probe, pub, real_frames[1], 'kill_worker')
    probe.wait_for(lambda: (st := status(diags)) is not None and st.level == DiagnosticStatus.ERROR
                   and 'worker' in st.message, 20, 'ERROR on /diagnostics', None)
    deadline = time.monotonic() + 15
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not node.alive(), 'the node kept running without its worker'
    assert node.proc.returncode == 1, node.log()[-2000:]
    assert 'InjectedFault' in node.log()


def test_error_logs_are_throttled_per_kind(fault_node, probe, real_frames):
    node = fault_node({**SMALL, 'error_throttle_s': 60.0})
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    bad = image_msg(real_frames[0], time.time_ns())
    bad.encoding = 'hsv42'
    for _ in range(5):   # a flood of one kind...
        pub.publish(bad)
        time.sleep(0.05)
    send(probe, pub, real_frames[0], 'engine_fault')   # ...does not hide another kind
    probe.wait_for(lambda: 'injected OpenCV failure' in node.log(), 20, 'the engine error logged', node)
    stamp = send(probe, pub, real_frames[1])
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, 'mask after the errors', node)
    log = node.log()
    assert log.count('bad_input:') == 1, log[-3000:]


@pytest.mark.parametrize('module,sig', [(NODE, signal.SIGINT), (NODE, signal.SIGTERM),
                                        ('vidseg_ros.ros.segment_lifecycle_node', signal.SIGINT)])
def test_signal_while_serving_stops_cleanly(start_node, probe, real_frames, module, sig):
    node = start_node(module, SMALL)
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    if 'lifecycle' in module:
        from lifecycle_msgs.msg import Transition
        lifecycle = Lifecycle(probe, node, OUT)   # a lost answer is looked up
        lifecycle.transition(Transition.TRANSITION_CONFIGURE)
        lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    stamp = send(probe, pub, real_frames[0])
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, 'a first mask', node)
    for i in range(10):   # the worker is busy when the signal comes
        send(probe, pub, real_frames[i % len(real_frames)])
        time.sleep(0.02)
    t0 = time.monotonic()
    node.proc.send_signal(sig)
    node.proc.wait(timeout=10)
    elapsed = time.monotonic() - t0
    log = node.log()
    assert node.proc.returncode == 0, log[-2000:]
    assert elapsed < 5.0, f'took {elapsed:.1f} s to stop'
    assert '[ERROR]' not in log and 'Traceback' not in log, log[-2000:]


def test_absurd_stamp_is_counted_and_kept_out_of_latency(start_node, probe, real_frames):
    node = start_node(NODE, SMALL)
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    pub.publish(image_msg(real_frames[0], 0))   # stamped 0: served, but not a latency
    probe.wait_for(lambda: any(stamp_of(m) == 0 for m in masks), 30, 'mask of the frame stamped 0', node)
    for i in range(1, 3):
        stamp = send(probe, pub, real_frames[i])
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, f'mask {i}', node)
    probe.wait_for(lambda: (st := status(diags)) is not None and diag_values(st)['frames_out'] == '3', 10,
                   'diagnostics after 3 frames', node)
    values = diag_values(status(diags))
    assert values['bad_stamps'] == '1'
    assert float(values['end_to_end_ms_max']) < 10_000, values['end_to_end_ms_max']


def test_bad_input_dominating_is_an_error_until_good_frames_return(start_node, probe, real_frames):
    node = start_node(NODE, SMALL)
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    bad = image_msg(real_frames[0], time.time_ns())
    bad.step += 1
    for _ in range(8):
        pub.publish(bad)
        time.sleep(0.05)
    probe.wait_for(lambda: (st := status(diags)) is not None and st.level == DiagnosticStatus.ERROR
                   and 'bad input dominates' in st.message, 15, 'ERROR: bad input dominates', node)
    for i in range(10):
        stamp = send(probe, pub, real_frames[i % len(real_frames)])
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, f'mask {i}', node)
    probe.wait_for(lambda: status(diags).level != DiagnosticStatus.ERROR, 10, 'no longer ERROR', node)
