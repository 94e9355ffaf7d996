"""The worker waits for a frame's CameraInfo only while it can still come: a silent camera_info topic
(or one whose newest message already passed the frame) costs no frame the wait."""
import threading
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
    io = SimpleNamespace(infos=deque(), _info_cond=threading.Condition(), _last_info_at=float('-inf'))
    done = threading.Event()
    threading.Thread(target=lambda: (CameraIO.matching_info(io, Header(stamp=Time(sec=5))), done.set()),
                     daemon=True).start()
    assert done.wait(20.0), 'waited for a CameraInfo that nobody publishes'


def test_a_flowing_topic_is_waited_for_and_matched_by_stamp():
    io = SimpleNamespace(infos=deque([info(4)]), _info_cond=threading.Condition(), _last_info_at=1e18)
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

    io = SimpleNamespace(infos=deque([info(4)]), _info_cond=threading.Condition(), _last_info_at=0.0)
    got = []
    t = threading.Thread(target=lambda: got.append(
        CameraIO.matching_info(io, Header(stamp=Time(sec=100)), after_gap=True)))
    with io._info_cond:
        t.start()
        io.infos.append(info(100))        # the restarted driver's first CameraInfo, after its image
        io._info_cond.notify_all()
    t.join(30.0)
    assert got and got[0] is not None and got[0].header.stamp.sec == 100


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
