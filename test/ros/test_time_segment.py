"""segment_node and time: use_sim_time with a /clock from a probe (before the first /clock, at 10x), and
camera stamps it cannot compare with its clock (zero stamps). Real node, real /clock."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from support.ros_helpers import diag_values, image_msg, stamp_of

NODE = 'vidseg_ros.ros.segment_node'
PARAMS = {'input_hw': [96, 128], 'input_reliability': 'reliable', 'publish_overlay': False,
          'diagnostics_period_s': 0.2}
T0_NS = 1_700_000_000 * 10**9


@pytest.fixture
def trained_model(tmp_path):
    """A model that says it is trained: its status is OK, so the message is the latency one."""
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', width_mult=0.25)
    meta = default_meta('keyframe_fpn', model.arch_config, input_hw=[96, 128],
                        provenance={'trained': True, 'data': 'test'})
    return str(save_checkpoint(tmp_path / 'trained.pt', model, meta))


class SimClock:
    """Publishes /clock from T0_NS at ``rate`` times wall speed every 2 ms (a bag player at -r rate)."""

    def __init__(self, probe, rate: float):
        self.pub = probe.node.create_publisher(Clock, '/clock', 10)
        self.rate, self._t0, self._stop = rate, time.monotonic(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_ns(self) -> int:
        return T0_NS + int((time.monotonic() - self._t0) * self.rate * 1e9)

    def _run(self):
        while not self._stop:
            ns = self.now_ns()
            self.pub.publish(Clock(clock=Time(sec=ns // 10**9, nanosec=ns % 10**9)))
            time.sleep(0.002)

    def stop(self):
        self._stop = True
        self._thread.join(timeout=2)


def _send(probe, node, pub, masks, stamp_ns: int):
    n = len(masks)
    pub.publish(image_msg(np.full((96, 128, 3), 90, np.uint8), stamp_ns))
    probe.wait_for(lambda: len(masks) > n, 60, 'the mask of the frame', node)


def _status_after(probe, node, diags, frames_out: int):
    """The camera's latest status once it counts ``frames_out`` frames."""
    def latest():
        statuses = [s for a in diags for s in a.status if s.name.endswith(': image')]
        return statuses[-1] if statuses else None
    probe.wait_for(lambda: latest() is not None and diag_values(latest())['frames_out'] == str(frames_out), 20,
                   f'diagnostics of {frames_out} frames', node)
    return latest()


def test_sim_time_before_clock_then_at_10x(start_node, probe, trained_model):
    """Before the first /clock the status said 'end-to-end p50 0.0 ms' and counted the frames as bad stamps;
    at 10x the overhead subtracted wall-clock engine times from sim-time latency (+347 ms; -15 ms at 0.1x)."""
    node = start_node(NODE, {**PARAMS, 'model': trained_model, 'use_sim_time': True})
    masks = probe.collect(Image, '/vidseg_segmenter/mask')
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    for i in range(3):
        _send(probe, node, pub, masks, T0_NS + i * 10**8)
    status = _status_after(probe, node, diags, 3)
    values = diag_values(status)
    assert status.level == DiagnosticStatus.OK and 'end-to-end p50' not in status.message, status.message
    assert 'end-to-end not measured: use_sim_time is set and no /clock has arrived' in status.message
    assert (values['no_clock_frames'], values['bad_stamps'], values['latency_clock']) == ('3', '0', 'sim'), values
    assert node.log().count('no /clock has arrived: masks are published') == 1, node.log()

    clock = SimClock(probe, 10.0)
    try:
        probe.wait_for(lambda: diags[-1].header.stamp.sec >= T0_NS // 10**9, 20, '/clock in the node', node)
        for i in range(4):
            _send(probe, node, pub, masks, clock.now_ns() - 50_000_000)   # 5 ms of wall time before now
        status = _status_after(probe, node, diags, 7)
    finally:
        clock.stop()
    values = diag_values(status)
    assert 'end_to_end_ms_p50' in values and 'end-to-end p50' in status.message, (status.message, values)
    assert 'overhead_ms_p50' not in values, values   # sim-time latency minus wall-clock work is no overhead


def test_zero_stamps_do_not_read_as_zero_latency(start_node, probe, trained_model):
    """A driver stamping 0: latency cannot be measured; the status said 'end-to-end p50 0.0 ms'."""
    node = start_node(NODE, {**PARAMS, 'model': trained_model})
    masks = probe.collect(Image, '/vidseg_segmenter/mask')
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    for _ in range(3):   # identical stamps on consecutive frames too
        _send(probe, node, pub, masks, 0)
    status = _status_after(probe, node, diags, 3)
    values = diag_values(status)
    assert status.level == DiagnosticStatus.OK, status.message
    assert 'end-to-end not measured: 3 stamp(s) more than 10 s from the node clock' in status.message, status.message
    assert (values['bad_stamps'], values['latency_clock'], values['key_frames']) == ('3', 'system', '1'), values


def _tick(probe, node, clock_pub, diags, ns: int):
    """Publish /clock = ``ns`` until the node's clock reads it (its /diagnostics stamp). Published again each
    second: the node's /clock subscription is best effort, and under load the first tick could go before the
    subscription matched (a 20 s timeout in a loaded CI run)."""
    probe.wait_for_subscribers(clock_pub, proc=node)
    for attempt in range(20):
        clock_pub.publish(Clock(clock=Time(sec=ns // 10**9, nanosec=ns % 10**9)))
        try:
            return probe.wait_for(lambda: diags and stamp_of(diags[-1]) >= ns, 1, f'/clock {ns} in the node', node)
        except AssertionError:
            if attempt == 19 or not node.alive():
                raise


def test_a_frame_stamped_within_one_clock_step_is_no_clock_skew(start_node, probe, trained_model):
    """With /clock at 10 Hz the node clock holds each tick for 100 ms, so a frame stamped by the clock source
    60 ms after a tick arrives 60 ms "ahead": every such frame was counted in clock_skew_stamps (5 of 5) and
    end-to-end was not measured. Up to one /clock step is the clock's resolution; 400 ms ahead is still skew."""
    node = start_node(NODE, {**PARAMS, 'model': trained_model, 'use_sim_time': True})
    masks = probe.collect(Image, '/vidseg_segmenter/mask')
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    clock_pub = probe.node.create_publisher(Clock, '/clock', 10)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    step_ns, t = 100_000_000, T0_NS
    for _ in range(3):   # the node sees the clock's step
        t += step_ns
        _tick(probe, node, clock_pub, diags, t)
    for _ in range(5):
        t += step_ns
        _tick(probe, node, clock_pub, diags, t)
        _send(probe, node, pub, masks, t + 60_000_000)
    t += step_ns
    _tick(probe, node, clock_pub, diags, t)
    _send(probe, node, pub, masks, t + 400_000_000)   # four steps ahead: the sender's clock runs ahead
    values = diag_values(_status_after(probe, node, diags, 6))
    assert values['clock_skew_stamps'] == '1' and 399 < float(values['clock_skew_ms_max']) < 401, values
    assert values['latency_clock'] == 'sim' and 'end_to_end_ms_p50' in values, values
    assert 0 <= float(values['transport_ms_p50']) <= 100, values   # below the clock's resolution
