"""The worker waits for a frame's CameraInfo only while it can still come: a silent camera_info topic
(or one whose newest message already passed the frame) costs no frame the wait."""
import threading
import time
from collections import deque
from types import SimpleNamespace

import pytest

pytest.importorskip('rclpy')
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from vidseg_ros.ros import camera_io  # noqa: E402
from vidseg_ros.ros.camera_io import CameraIO, info_may_come  # noqa: E402


def info(sec: int) -> CameraInfo:
    return CameraInfo(header=Header(stamp=Time(sec=sec)))


def test_when_waiting_is_worth_it():
    assert not info_may_come(deque(), float('-inf'), 5 * 10**9, now=100.0)          # never any camera_info
    assert not info_may_come(deque([info(4)]), 90.0, 5 * 10**9, now=100.0)          # stopped 10 s ago
    assert not info_may_come(deque([info(6)]), 99.9, 5 * 10**9, now=100.0)          # already past this frame
    assert info_may_come(deque([info(4)]), 99.9, 5 * 10**9, now=100.0)              # flowing, not there yet


def test_a_silent_camera_info_topic_does_not_block_the_frame(monkeypatch):
    monkeypatch.setattr(camera_io, 'CAMERA_INFO_WAIT_S', 60.0)   # the old code waited this long per frame
    io = SimpleNamespace(infos=deque(), _info_cond=threading.Condition(), _last_info_at=float('-inf'),
                         _frame_info=None,
                         _info_misses=0, _missed_stamps=deque())
    done = threading.Event()
    threading.Thread(target=lambda: (CameraIO.matching_info(io, Header(stamp=Time(sec=5))), done.set()),
                     daemon=True).start()
    assert done.wait(20.0), 'waited for a CameraInfo that nobody publishes'


def test_a_flowing_topic_is_waited_for_and_matched_by_stamp():
    io = SimpleNamespace(infos=deque([info(4)]), _info_cond=threading.Condition(), _last_info_at=1e18,
                         _frame_info=None,
                         _info_misses=0, _missed_stamps=deque())
    got = []
    t = threading.Thread(target=lambda: got.append(CameraIO.matching_info(io, Header(stamp=Time(sec=5)))))
    with io._info_cond:
        t.start()
        io.infos.append(info(5))          # arrives while the worker waits (it waits on this condition)
        io._info_cond.notify_all()
    t.join(30.0)
    assert got and got[0].header.stamp.sec == 5


def test_after_a_gap_a_camera_that_had_camera_info_waits_for_it_once_more():
    """A camera restarting after 8 s of silence: its first frame went out without its CameraInfo, which the
    restarted driver published a moment after the image (camera_info was not 'flowing', so no wait)."""
    stale = deque([info(4)])
    assert info_may_come(stale, 92.0, 100 * 10**9, now=100.0, after_gap=True)        # had one, images resumed
    assert info_may_come(stale, 92.0, 1 * 10**9, now=100.0, after_gap=True)          # restarted clock: stamps
    assert not info_may_come(stale, 92.0, 100 * 10**9, now=100.0, after_gap=False)   # later frames: no wait
    assert not info_may_come(deque(), float('-inf'), 5 * 10**9, now=100.0, after_gap=True)   # never had one
    assert not info_may_come(deque([info(6)]), 99.9, 5 * 10**9, now=100.0, after_gap=True)   # flowing, passed

    io = SimpleNamespace(infos=deque([info(4)]), _info_cond=threading.Condition(), _last_info_at=0.0,
                         _frame_info=None,
                         _info_misses=0, _missed_stamps=deque())
    got = []
    t = threading.Thread(target=lambda: got.append(
        CameraIO.matching_info(io, Header(stamp=Time(sec=100)), after_gap=True)))
    with io._info_cond:
        t.start()
        io.infos.append(info(100))        # the restarted driver's first CameraInfo, after its image
        io._info_cond.notify_all()
    t.join(30.0)
    assert got and got[0] is not None and got[0].header.stamp.sec == 100


def test_at_start_up_a_camera_with_a_camera_info_publisher_waits_for_its_first_one():
    """Never had one: no wait (nothing to say it will come), unless a camera_info publisher is matched and
    the frame is the first after a gap, start-up included; later frames of such a camera do not wait."""
    assert info_may_come(deque(), float('-inf'), 5 * 10**9, now=100.0, after_gap=True, info_publishers=1)
    assert not info_may_come(deque(), float('-inf'), 5 * 10**9, now=100.0, after_gap=True, info_publishers=0)
    assert not info_may_come(deque(), float('-inf'), 5 * 10**9, now=100.0, after_gap=False, info_publishers=1)


def test_the_first_frame_gets_the_camera_info_that_comes_just_after_it(start_node, probe, real_frames):
    """QA: a camera whose first CameraInfo arrives a moment after its first image (a driver starting up)
    had that frame go out without ~/camera_info ('no camera_info with stamp ...'): the worker waited only
    for a camera_info topic already flowing. The probe sends the CameraInfo only once the frame's mask is
    out, i.e. when the worker looks for it (mask first, then camera_info): deterministic, no sleeps."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from support.ros_helpers import image_msg, stamp_of
    from vidseg_ros.ros.conversions import pinhole_camera_info
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node = start_node('vidseg_ros.ros.segment_node', {
        'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'input_reliability': 'reliable',
        'use_camera_info': True})
    infos = probe.collect(CameraInfo, '/vidseg_segmenter/camera_info', reliable)
    pub, pub_info = probe.publishers(node, (Image, 'image'), (CameraInfo, 'camera_info'))
    rgb = real_frames[0]
    stamp = 1_700_000_000_123_000_000
    stamp_msg = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
    info_msg = pinhole_camera_info(rgb.shape[1], rgb.shape[0], Header(stamp=stamp_msg, frame_id='camera'))
    # sent from the probe's executor the moment the mask arrives (not from a polling loop)
    probe.node.create_subscription(Image, '/vidseg_segmenter/mask',
                                   lambda m: stamp_of(m) == stamp and pub_info.publish(info_msg), reliable)
    time.sleep(1.0)   # the node's mask publisher discovers that subscription
    pub.publish(image_msg(rgb, stamp))
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in infos), 20, 'the first frame\'s ~/camera_info', node)
    assert 'no camera_info with stamp' not in node.log()


def test_the_gap_is_marked_on_the_first_image_and_survives_a_dropped_frame(monkeypatch):
    ticks = iter([10.0, 10.1, 19.0, 19.01, 19.05])    # arrivals: 8.9 s of silence before the third
    monkeypatch.setattr(camera_io, 'time', SimpleNamespace(monotonic=lambda: next(ticks), sleep=lambda s: None))
    node = SimpleNamespace(get_clock=lambda: SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=0)))
    stats = SimpleNamespace(rate_in=SimpleNamespace(tick=lambda: None), dropped=0)
    io = SimpleNamespace(node=node, stats=stats, _lock=threading.Condition(), _slot=None,
                         _last_image_at=float('-inf'))
    taken = []
    for taken_now in (True, True, False, True, True):  # the third is overwritten by the fourth in the mailbox
        CameraIO._on_image(io, object())
        if taken_now:
            taken.append(CameraIO.take(io).after_gap)
    assert taken == [True, False, True, False] and stats.dropped == 1
