"""video_source_node publishes the same grey and CameraInfo as bag-from-frames (one helper each)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from vidseg_ros.data.bags.from_frames import camera_info_msg

NODE = 'vidseg_ros.ros.video_source_node'


def test_mono8_is_bt601_and_camera_info_matches_bag_from_frames(start_node, probe, tmp_path):
    # Saturated colours: BT.601 luma (OpenCV) and a plain channel mean differ by tens of grey levels.
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:32] = (0, 255, 0)
    rgb[:, 32:48] = (0, 0, 255)
    rgb[:, 48:] = (200, 120, 40)
    for i in range(10):      # several identical frames: any one that arrives will do
        cv2.imwrite(str(tmp_path / f'{i:04d}.png'), rgb[:, :, ::-1])
    images = probe.collect(Image, 'image')
    infos = probe.collect(CameraInfo, 'camera_info')
    node = start_node(NODE, {'source': str(tmp_path), 'rate_hz': 30.0, 'wait_for_subscribers': 1,
                             'encoding': 'mono8'})
    probe.wait_for(lambda: len(images) >= 1 and len(infos) >= 1, 30, 'a frame and its camera_info', node)
    msg = images[0]
    assert (msg.encoding, msg.height, msg.width) == ('mono8', 48, 64)
    grey = np.frombuffer(bytes(msg.data), np.uint8).reshape(48, 64)
    np.testing.assert_array_equal(grey, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert grey[0, 0] == 76 and grey[0, 16] == 150          # not the mean (85, 85)
    bag_info = camera_info_msg(48, 64, 0, 'camera')
    assert list(infos[0].k) == pytest.approx(list(bag_info.k))
    assert list(infos[0].p) == pytest.approx(list(bag_info.p))
    assert infos[0].k[2] == pytest.approx((64 - 1) / 2) and infos[0].k[5] == pytest.approx((48 - 1) / 2)
