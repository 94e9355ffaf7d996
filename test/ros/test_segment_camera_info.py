"""~/camera_info of a real segment_node, end to end over DDS: a CameraInfo with an ROI (do_rectify) and
binning is published as the mask's REP-104 projection (the one test_segment_outputs' unit test of
scale_camera_info assumes); a CameraInfo that comes before its image, after it, never, or with a stamp that
never matches its image: every frame is segmented and ~/camera_info goes out only with the frame's own."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from support.ros_helpers import IN_PROCESS, image_msg, spun, stamp_of

from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.ros import camera_io
from vidseg_ros.ros.camera_io import stamp_ns
from vidseg_ros.ros.segment_node import SegmentNode

NODE = 'vidseg_ros.ros.segment_node'
OUT = '/vidseg_segmenter'
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'input_reliability': 'reliable',
          'publish_overlay': False, 'publish_color_mask': False, 'use_camera_info': True}
BASE = 1_700_000_000_000_000_000
PERIOD = 66_666_667   # 15 Hz


def header(stamp: int, frame_id: str = 'camera') -> Header:
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)


def calibrated(width: int, height: int, stamp: int, fx: float = 1000.0, binning=(0, 0), roi=(0, 0, 0, 0),
               do_rectify: bool = False) -> CameraInfo:
    """A calibrated sensor's CameraInfo: fx (telling one frame's from another's), fy 0.9 fx, principal point
    off centre, a stereo Tx; binning and ROI as REP-104 has them (the ROI in full-sensor pixels)."""
    info = CameraInfo(header=header(stamp), width=width, height=height, binning_x=binning[0],
                      binning_y=binning[1], distortion_model='plumb_bob')
    cx, cy = width / 2 + 7, height / 2 - 5
    info.k = [fx, 0.0, cx, 0.0, 0.9 * fx, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, -0.07 * fx, 0.0, 0.9 * fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r, info.d = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [0.0] * 5
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    info.roi.do_rectify = do_rectify
    return info


def project(matrix, cols: int, point) -> np.ndarray:
    uvw = np.asarray(matrix, float).reshape(3, cols) @ np.append(point, 1.0)[:cols]
    return uvw[:2] / uvw[2]


def assert_projects_onto_the_mask(info: CameraInfo, out: CameraInfo, mask: Image) -> None:
    """REP-104: a point's full-sensor pixel, less the ROI offset, binned, then scaled from the image the
    CameraInfo describes to the mask, is where ``out`` projects it; ``out`` is a plain full image."""
    bx, by = max(info.binning_x, 1), max(info.binning_y, 1)
    image_w, image_h = (info.roi.width or info.width) // bx, (info.roi.height or info.height) // by
    sx, sy = mask.width / image_w, mask.height / image_h
    for point in ([0.1, -0.2, 2.0], [-0.4, 0.3, 5.0], [0.0, 0.0, 1.0]):
        for cols in (3, 4):
            u, v = project(info.k if cols == 3 else info.p, cols, point)
            expected = ((u - info.roi.x_offset) / bx * sx, (v - info.roi.y_offset) / by * sy)
            np.testing.assert_allclose(project(out.k if cols == 3 else out.p, cols, point), expected, rtol=1e-9)
    assert (out.width, out.height) == (mask.width, mask.height)
    assert (out.binning_x, out.binning_y) == (0, 0)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height, out.roi.do_rectify) == (0, 0, 0, 0,
                                                                                                       False)
    assert list(out.d) == list(info.d) and list(out.r) == list(info.r) and out.distortion_model == 'plumb_bob'
    assert out.header == mask.header   # the image's stamp and frame_id, as every output


def test_an_roi_and_binned_camera_info_is_published_as_the_mask_projection(start_node, probe, real_frames):
    """A 1280x960 sensor read out as a 640x480 ROI at (100, 60) (do_rectify), binned 2x2 then 2x4: the
    images are 320x240 and 320x120, the masks the network size; ~/camera_info is their projection."""
    node = start_node(NODE, {**PARAMS, 'mask_resolution': 'network'})
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    infos = probe.collect(CameraInfo, f'{OUT}/camera_info', RELIABLE)
    pub, pub_info = probe.publishers(node, (Image, 'image'), (CameraInfo, 'camera_info'))
    roi = (100, 60, 640, 480)
    for i, binning in enumerate([(2, 2), (2, 4)]):
        stamp = BASE + i * PERIOD
        info = calibrated(1280, 960, stamp, binning=binning, roi=roi, do_rectify=True)
        rgb = cv2.resize(real_frames[i], (640 // binning[0], 480 // binning[1]))
        pub_info.publish(info)
        pub.publish(image_msg(rgb, stamp))
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in infos), 60, f'~/camera_info of frame {i}', node)
        mask = next(m for m in masks if stamp_of(m) == stamp)
        out = next(m for m in infos if stamp_of(m) == stamp)
        assert (mask.width, mask.height) != (rgb.shape[1], rgb.shape[0])   # scaled, not only shifted and binned
        assert_projects_onto_the_mask(info, out, mask)
    assert 'camera_info' not in ''.join(line for line in node.log().splitlines() if 'WARN' in line)


def test_every_frame_is_segmented_and_gets_its_own_camera_info_or_none(start_node, probe, real_frames):
    """In one node, in turn: images with no camera_info publisher at all; a CameraInfo sent before its
    image, then five sent ahead of theirs in a burst; an image whose CameraInfo never comes; CameraInfos
    whose stamps never match their image (just after it, just before it); a matching one again. Every
    frame gets its mask; ~/camera_info goes out for exactly the frames with their own CameraInfo, each
    with that one's calibration (fx differs per frame), never a neighbour's.
    Found: the burst lost all but one or two: camera_info was subscribed with the images' input_depth (1,
    'segment the newest frame'), so DDS kept only the newest CameraInfo between two executor passes."""
    node = start_node(NODE, PARAMS)
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    infos = probe.collect(CameraInfo, f'{OUT}/camera_info', RELIABLE)
    (pub,) = probe.publishers(node, (Image, 'image'))
    rgb = [cv2.resize(f, (64, 48)) for f in real_frames]
    stamps = [BASE + i * PERIOD for i in range(14)]
    fx_of = {}   # stamp -> fx of the CameraInfo sent with that very stamp

    def segment(i, wait_info=False):
        pub.publish(image_msg(rgb[i % len(rgb)], stamps[i]))
        probe.wait_for(lambda: any(stamp_of(m) == stamps[i] for m in masks), 60, f'the mask of frame {i}', node)
        if wait_info:
            probe.wait_for(lambda: any(stamp_of(m) == stamps[i] for m in infos), 20,
                           f'~/camera_info of frame {i}', node)

    def send_info(stamp, fx):
        pub_info.publish(calibrated(64, 48, stamp, fx))

    def send_own_info(i):
        fx_of[stamps[i]] = 500.0 + i
        send_info(stamps[i], fx_of[stamps[i]])

    segment(0)   # no camera_info publisher at all
    segment(1)
    pub_info = probe.node.create_publisher(CameraInfo, 'camera_info', RELIABLE)
    probe.wait_for_subscribers(pub_info, proc=node)
    send_own_info(2)   # before its image, given time to arrive first
    time.sleep(0.5)
    segment(2, wait_info=True)
    for i in range(3, 8):   # a burst ahead of their images
        send_own_info(i)
    for i in range(3, 8):
        segment(i, wait_info=True)
    send_own_info(9)   # frame 8's never comes (camera_info flowing, and past it: no wait)
    segment(8)
    segment(9, wait_info=True)
    send_info(stamps[10] + 1_000_000, 910.0)   # never matching: 1 ms after its image
    segment(10)
    send_info(stamps[11] - 1_000_000, 911.0)   # 1 ms before (waited for, briefly)
    segment(11)
    send_own_info(12)
    segment(12, wait_info=True)

    assert sorted(stamp_of(m) for m in masks) == stamps[:13]
    with probe.lock:
        got = {stamp_of(m): m for m in infos}
    assert sorted(got) == sorted(fx_of), 'a frame without its own CameraInfo got ~/camera_info, or one lost it'
    for stamp, out in got.items():
        assert out.k[0] == pytest.approx(fx_of[stamp]) and out.p[0] == pytest.approx(fx_of[stamp]), (stamp, out.k)
        assert (out.width, out.height) == (64, 48) and out.header.frame_id == 'camera'
    log = node.log()
    assert f'no camera_info with stamp {stamps[0]}' in log and 'Traceback' not in log, log[-3000:]


# ---- in-process: a frame that takes long while camera_info flows on --------------------------------------


@pytest.fixture
def held(monkeypatch):
    """StreamSegmenter.step held at a gate for the frame stamped ``held.stamp`` (a frame in inference for
    as long as the test wants)."""
    gate = type('Gate', (), {})()
    gate.stamp, gate.entered, gate.opened = None, threading.Event(), threading.Event()
    step = StreamSegmenter.step

    def held_step(engine, rgb, stamp=None, **kw):
        if stamp is not None and stamp == gate.stamp:
            gate.entered.set()
            gate.opened.wait(60)
        return step(engine, rgb, stamp, **kw)
    monkeypatch.setattr(StreamSegmenter, 'step', held_step)
    yield gate
    gate.opened.set()


@pytest.fixture
def segmenter(held):
    """segment_node's node in this process, spun in a thread."""
    overrides = [Parameter(k, value=v) for k, v in {**PARAMS, 'input_hw': [32, 32]}.items()]
    with spun(lambda context: SegmentNode(IN_PROCESS, context=context, parameter_overrides=overrides)) as node:
        yield node
        held.opened.set()


@pytest.mark.parametrize('sent', ['before', 'during'])
def test_a_frame_in_a_long_inference_keeps_its_camera_info(segmenter, probe, held, real_frames, sent):
    """A camera sending camera_info with every image (30 Hz) and a frame whose inference takes longer
    than the cache holds (CAMERA_INFO_CACHE messages: 1 s at 30 Hz; a big model on a CPU): its CameraInfo,
    received before the frame started or while it ran, was pushed out of the cache by the newer ones before
    the frame looked it up, and the frame went out without ~/camera_info ('no camera_info with stamp ...').
    (Seen only once camera_info's reader was deep enough to take such a burst at all.)"""
    masks = probe.collect(Image, f'/{IN_PROCESS}/mask', RELIABLE)
    infos = probe.collect(CameraInfo, f'/{IN_PROCESS}/camera_info', RELIABLE)
    pub, pub_info = (probe.node.create_publisher(t, name, RELIABLE)
                     for t, name in ((Image, 'image'), (CameraInfo, 'camera_info')))
    probe.wait_for_subscribers(pub)
    probe.wait_for_subscribers(pub_info)
    time.sleep(1.0)   # the node's publishers discover our subscriptions
    cache = segmenter.core.streams[0].io.infos
    rgb = cv2.resize(real_frames[0], (64, 48))
    held.stamp = stamp = BASE

    def cached(s):
        return lambda: any(stamp_ns(i.header.stamp) == s for i in list(cache))
    if sent == 'before':
        pub_info.publish(calibrated(64, 48, stamp, 700.0))
        probe.wait_for(cached(stamp), 20, 'the node caching the CameraInfo')
    pub.publish(image_msg(rgb, stamp))
    assert held.entered.wait(30), 'the frame never reached inference'
    if sent == 'during':
        pub_info.publish(calibrated(64, 48, stamp, 700.0))
        probe.wait_for(cached(stamp), 20, 'the node caching the CameraInfo')
    later = [stamp + (i + 1) * PERIOD // 2 for i in range(camera_io.CAMERA_INFO_CACHE + 5)]
    for s in later:     # the camera's next CameraInfos, while the frame is in inference
        pub_info.publish(calibrated(64, 48, s, 800.0))
    probe.wait_for(cached(later[-1]), 20, 'the node caching the newer CameraInfos')
    held.opened.set()
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, 'the held frame\'s mask')
    # the next frame, with its own CameraInfo: once its ~/camera_info is out, the held frame's would be too
    pub.publish(image_msg(rgb, later[-1]))
    probe.wait_for(lambda: any(stamp_of(m) == later[-1] for m in infos), 30, 'the next frame\'s ~/camera_info')
    with probe.lock:
        got = {stamp_of(m): m.k[0] for m in infos}
    assert got == {stamp: 700.0, later[-1]: 800.0}


def test_an_uncalibrated_cameras_zero_camera_info_goes_out_sized_to_the_mask_without_a_warning(start_node, probe,
                                                                                               real_frames):
    """sensor_msgs/CameraInfo: an uncalibrated camera leaves D, K, R and P zeroed (K[0] == 0 says so); a driver
    without a calibration file (camera_info_manager's default) sends one with every frame. It was refused as bad
    input ('focal lengths must be positive (fx 0, fy 0)'): an ERROR line, /diagnostics WARN for as long as the
    camera ran, and no ~/camera_info, whose size the mask's consumers read."""
    node = start_node(NODE, {**PARAMS, 'diagnostics_period_s': 0.3})
    masks = probe.collect(Image, f'{OUT}/mask', RELIABLE)
    infos = probe.collect(CameraInfo, f'{OUT}/camera_info', RELIABLE)
    pub, pub_info = probe.publishers(node, (Image, 'image'), (CameraInfo, 'camera_info'))
    for i in range(3):
        stamp = BASE + i * PERIOD
        pub_info.publish(CameraInfo(header=header(stamp), width=640, height=480))   # all else zero
        pub.publish(image_msg(cv2.resize(real_frames[i], (640, 480)), stamp))
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in infos), 60, f'~/camera_info of frame {i}', node)
        mask = next(m for m in masks if stamp_of(m) == stamp)
        out = next(m for m in infos if stamp_of(m) == stamp)
        assert (out.width, out.height) == (mask.width, mask.height) and out.header == mask.header
        assert not any(out.k) and not any(out.p) and not any(out.r) and not any(out.d), out   # still uncalibrated
    assert not [line for line in node.log().splitlines() if 'camera_info' in line], node.log()[-3000:]
