"""video_source_node and time: with use_sim_time its timer and stamps follow /clock (ROS timers do), so
nothing comes before the first /clock; it said 'publishing ... at 10 Hz' and then nothing, without a word."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from support.ros_helpers import stamp_of

NODE = 'vidseg_ros.ros.video_source_node'


def _run_clock(pub, start_s: float, wall_s: float) -> None:
    """/clock from ``start_s`` at wall speed for ``wall_s`` seconds, every 10 ms (a bag player)."""
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < wall_s:
        ns = int((start_s + elapsed) * 1e9)
        pub.publish(Clock(clock=Time(sec=ns // 10**9, nanosec=ns % 10**9)))
        time.sleep(0.01)


def test_no_clock_is_said_then_frames_follow_clock(start_node, probe, tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.full((32, 32, 3), 60 * i, np.uint8))
    node = start_node(NODE, {'source': str(tmp_path), 'rate_hz': 10.0, 'loop': True, 'use_sim_time': True})
    images = probe.collect(Image, 'image')
    probe.wait_for(lambda: 'no /clock has arrived after 3 s' in node.log(), 30, 'the no-/clock warning', node)
    assert images == [] and node.log().count('no /clock has arrived') == 1, node.log()

    clock = probe.node.create_publisher(Clock, '/clock', 10)
    _run_clock(clock, 100.0, 2.0)
    first = len(images)
    assert first >= 5 and all(100.0 <= stamp_of(m) / 1e9 < 102.1 for m in images), [stamp_of(m) for m in images]
    _run_clock(clock, 50.0, 2.0)   # the player loops: /clock back 52 s, frames go on at the new time
    later = images[first:]
    assert len(later) >= 5 and all(50.0 <= stamp_of(m) / 1e9 < 52.1 for m in later[1:]), [stamp_of(m) for m in later]
    assert node.alive() and node.log().count('no /clock has arrived') == 1
