"""Several cameras on one segment_node, one shared inference worker: one camera's trouble must not cost the
others their frames.

Found (QA hunt, cameras [good, off] at 30 Hz, use_camera_info): a camera whose CameraInfos are stamped 1 ms
before its images made the worker wait CAMERA_INFO_WAIT_S for a match on every one of its frames, and the
healthy camera's masks fell from 153 to 65 of 170 frames. Now a camera waits at most INFO_MISSES_NO_WAIT
frames in a row in vain, and waits again once a CameraInfo that would have matched a frame comes.

A frame stuck in the shared worker turns every camera's /diagnostics ERROR; the message says whose frame it is.
"""
from __future__ import annotations

import threading
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from support.ros_helpers import IN_PROCESS, image_msg, spun, stamp_of

from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.ros import camera_io, health
from vidseg_ros.ros.camera_io import INFO_MISSES_NO_WAIT, CameraIO
from vidseg_ros.ros.conversions import pinhole_camera_info
from vidseg_ros.ros.segment_node import SegmentNode

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 32], 'input_reliability': 'reliable',
          'publish_overlay': False, 'publish_color_mask': False, 'publish_confidence': False,
          'use_camera_info': True, 'cameras': ['good', 'off']}
BASE = 1_700_000_000_000_000_000
PERIOD = 33_333_333   # 30 Hz
EARLY = 1_000_000     # the 'off' camera stamps its CameraInfo 1 ms before its image


def header(stamp: int, frame_id: str) -> Header:
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)


class CountingCondition(threading.Condition):
    """A Condition that counts the waits for a CameraInfo."""

    waits = 0

    def wait_for(self, predicate, timeout=None):
        self.waits += 1
        return super().wait_for(predicate, timeout)


def test_a_camera_whose_camera_info_never_matches_stops_costing_the_worker_waits(monkeypatch):
    """CameraInfos flowing, each 1 ms before its image: the first INFO_MISSES_NO_WAIT frames wait (a lost
    CameraInfo looks the same), the rest do not; a CameraInfo stamped as a frame that went without (it
    matches, only late) makes the camera's frames wait again. The old code waited on all 10."""
    monkeypatch.setattr(camera_io, 'CAMERA_INFO_WAIT_S', 0.01)
    io = SimpleNamespace(infos=deque(maxlen=camera_io.CAMERA_INFO_CACHE), _info_cond=CountingCondition(),
                         _last_info_at=float('-inf'), _frame_info=None, _frame_stamp=None, _info_misses=0,
                         _missed_stamps=deque(maxlen=camera_io.CAMERA_INFO_CACHE))
    stamps = [BASE + i * PERIOD for i in range(12)]
    for i in range(10):
        CameraIO._on_camera_info(io, CameraInfo(header=header(stamps[i] - EARLY, 'off')))
        assert CameraIO.matching_info(io, header(stamps[i], 'off')) is None
    assert io._info_cond.waits == INFO_MISSES_NO_WAIT
    CameraIO._on_camera_info(io, CameraInfo(header=header(stamps[9], 'off')))   # frame 9's, late
    CameraIO._on_camera_info(io, CameraInfo(header=header(stamps[10] - EARLY, 'off')))
    assert CameraIO.matching_info(io, header(stamps[10], 'off')) is None
    assert io._info_cond.waits == INFO_MISSES_NO_WAIT + 1
    CameraIO._on_camera_info(io, CameraInfo(header=header(stamps[11], 'off')))   # before its image: no wait
    assert CameraIO.matching_info(io, header(stamps[11], 'off')).header.stamp == header(stamps[11], 'off').stamp
    assert io._info_cond.waits == INFO_MISSES_NO_WAIT + 1 and io._info_misses == 0


@pytest.fixture
def segmenter():
    """segment_node's node in this process (so the test can set the wait), spun in a thread."""
    overrides = [Parameter(k, value=v) for k, v in PARAMS.items()]
    with spun(lambda context: SegmentNode(IN_PROCESS, context=context, parameter_overrides=overrides)) as node:
        yield node


def test_a_camera_with_mismatched_camera_info_does_not_stall_the_other(segmenter, probe, monkeypatch):
    """Real DDS, one node serving good + off: after off's first frames have waited in vain, the wait is made
    60 s; good's frames, sent after each of off's, are all segmented within 20 s (the old code held the
    worker 60 s on off's next frame). Off keeps being segmented, each camera's misses are counted on it."""
    monkeypatch.setattr(camera_io, 'CAMERA_INFO_WAIT_S', 0.05)
    monkeypatch.setattr(camera_io, 'IMAGE_GAP_S', 3600.0)   # a slow machine's pause is no camera restart
    masks = {c: probe.collect(Image, f'/{IN_PROCESS}/{c}/mask', RELIABLE) for c in ('good', 'off')}
    pubs = {}
    for msg_type, topic in ((Image, 'good/image'), (Image, 'off/image'), (CameraInfo, 'off/camera_info')):
        pubs[topic] = probe.node.create_publisher(msg_type, topic, RELIABLE)
        probe.wait_for_subscribers(pubs[topic], timeout=30)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)

    def send(camera, i, wait=True):
        stamp = BASE + i * PERIOD
        if camera == 'off':
            pubs['off/camera_info'].publish(pinhole_camera_info(64, 48, header(stamp - EARLY, 'off')))
        pubs[f'{camera}/image'].publish(image_msg(rgb, stamp, camera))
        if wait:
            probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks[camera]), 20, f'{camera} mask {i}')

    for i in range(INFO_MISSES_NO_WAIT):
        send('off', i)
    monkeypatch.setattr(camera_io, 'CAMERA_INFO_WAIT_S', 60.0)
    for i in range(INFO_MISSES_NO_WAIT, INFO_MISSES_NO_WAIT + 5):
        send('off', i, wait=False)
        send('good', i)
        probe.wait_for(lambda: any(stamp_of(m) == BASE + i * PERIOD for m in masks['off']), 20, f'off mask {i}')
    good, off = segmenter.core.streams
    assert (good.name, off.name) == ('good', 'off')
    assert off.stats.errors.get('camera_info', 0) == INFO_MISSES_NO_WAIT + 5
    assert good.stats.frames == 5 and good.stats.errors.get('camera_info', 0) == 5   # it has none at all


def test_a_frame_stuck_in_the_worker_is_named_by_its_camera_on_every_cameras_status(segmenter, probe, monkeypatch):
    """off's frame held in the engine: good and off both go ERROR (they share the worker) and both say the
    frame is off's. The old message, 'inference worker stuck on one frame', was the same on every camera: an
    operator with several could not tell which camera's input to look at."""
    monkeypatch.setattr(camera_io, 'CAMERA_INFO_WAIT_S', 0.01)   # off sends no camera_info
    monkeypatch.setattr(health, 'STUCK_MIN_S', 0.5)
    monkeypatch.setattr(health, 'STUCK_FACTOR', 0)
    entered, opened = threading.Event(), threading.Event()
    step = StreamSegmenter.step

    def held_step(engine, rgb, stamp=None, **kw):
        if stamp == BASE:
            entered.set()
            opened.wait(60)
        return step(engine, rgb, stamp, **kw)
    monkeypatch.setattr(StreamSegmenter, 'step', held_step)
    arrays = probe.collect(DiagnosticArray, '/diagnostics', RELIABLE)
    pub = probe.node.create_publisher(Image, 'off/image', RELIABLE)
    probe.wait_for_subscribers(pub, timeout=30)
    latest: dict[str, DiagnosticStatus] = {}

    def both_stuck() -> bool:
        for status in (s for a in arrays for s in a.status if s.name.startswith(f'/{IN_PROCESS}: ')):
            latest[status.hardware_id] = status
        return (set(latest) == {'good', 'off'}
                and all(s.level == DiagnosticStatus.ERROR and 'stuck' in s.message for s in latest.values()))
    try:
        pub.publish(image_msg(np.zeros((48, 64, 3), np.uint8), BASE, 'off'))
        assert entered.wait(30), 'the frame never reached the engine'
        probe.wait_for(both_stuck, 20, 'both cameras ERROR: worker stuck')
        for status in latest.values():
            assert "of camera 'off' for" in status.message, status.message
    finally:
        opened.set()
