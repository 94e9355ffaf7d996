"""The node creates, publishes and destroys its image topics from the one table engine.outputs.OUTPUTS:
a toy entry added there (test/support/toy_output_node.py) is published like the built-in ones.
~/camera_info is the projection of the published mask, from a CameraInfo that describes the image."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from support.ros_helpers import diag_values, image_msg, stamp_of

from support.toy_output_node import edges

from vidseg_ros.ros.conversions import pinhole_camera_info, scale_camera_info

OUT = '/vidseg_segmenter'
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'input_reliability': 'reliable',
          'publish_overlay': False}


def _ids(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)


def test_a_toy_table_entry_is_published_like_the_built_in_outputs(start_node, probe, real_frames, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', str(Path(__file__).parents[1]))   # test/: the support package
    node = start_node('support.toy_output_node', PARAMS)
    masks = probe.collect(Image, f'{OUT}/mask')
    toys = probe.collect(Image, f'{OUT}/edges')
    overlays = probe.collect(Image, f'{OUT}/overlay')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    stamps = [1_700_000_000_000_000_000 + i * 66_666_667 for i in range(2)]
    for i, stamp in enumerate(stamps):
        pub.publish(image_msg(real_frames[i], stamp))
        probe.wait_for(lambda: len(masks) > i and len(toys) > i, 60, f'mask and edges of frame {i}', node)
    assert [stamp_of(m) for m in toys] == stamps
    for mask, toy in zip(masks, toys):
        assert (toy.encoding, toy.height, toy.width) == ('mono8', mask.height, mask.width)
        # what the renderer saw: the published mask is the class ids (no remap here)
        seen = SimpleNamespace(result=SimpleNamespace(class_ids=_ids(mask)))
        np.testing.assert_array_equal(_ids(toy), edges(seen))
    assert overlays == []   # its setting is off: the loop honours every entry's switch


def sensor_info(width, height, binning=(0, 0), roi=(0, 0, 0, 0), header=None) -> CameraInfo:
    """A calibrated sensor's CameraInfo (fx 1000, fy 900, principal point off centre, a stereo Tx)."""
    info = CameraInfo(width=width, height=height, binning_x=binning[0], binning_y=binning[1],
                      distortion_model='plumb_bob', header=header or Header())
    info.k = [1000.0, 0.0, width / 2 + 7, 0.0, 900.0, height / 2 - 5, 0.0, 0.0, 1.0]
    info.p = [1000.0, 0.0, width / 2 + 7, -70.0, 0.0, 900.0, height / 2 - 5, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r, info.d = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0] * 5
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    return info


def project(matrix, width: int, point) -> np.ndarray:
    m = np.asarray(matrix, float).reshape(3, width)
    uvw = m @ np.append(point, 1.0)[:width]
    return uvw[:2] / uvw[2]


@pytest.mark.parametrize('binning, roi', [((0, 0), (0, 0, 0, 0)), ((2, 2), (0, 0, 0, 0)),
                                          ((0, 0), (100, 60, 1000, 800)), ((2, 4), (100, 60, 1000, 800))],
                         ids=['plain', 'binned', 'roi', 'roi-binned'])
def test_the_mask_camera_info_projects_onto_the_mask(binning, roi):
    """K was scaled from the CameraInfo's own width/height, ignoring REP-104 binning and ROI: a point
    landed on the wrong mask pixel. Now a point's full-sensor pixel, less the ROI offset, binned and
    scaled to the mask, is where the mask's CameraInfo projects it."""
    info = sensor_info(1280, 960, binning, roi)
    bx, by = max(binning[0], 1), max(binning[1], 1)
    image_w, image_h = (roi[2] or 1280) // bx, (roi[3] or 960) // by
    out = scale_camera_info(info, 160, 120)
    sx, sy = 160 / image_w, 120 / image_h
    for point in ([0.1, -0.2, 2.0], [-0.4, 0.3, 5.0]):
        for matrix, cols in ((info.k, 3), (info.p, 4)):
            u, v = project(matrix, cols, point)
            expected = ((u - roi[0]) / bx * sx, (v - roi[1]) / by * sy)
            np.testing.assert_allclose(project(out.k if cols == 3 else out.p, cols, point), expected)
    assert (out.width, out.height, out.binning_x, out.binning_y) == (160, 120, 0, 0)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (0, 0, 0, 0)


def test_a_camera_info_of_another_size_is_rejected_a_binned_one_served(start_node, probe, real_frames):
    """t_cams: 640x480 images with a 320x961 CameraInfo gave ~/camera_info with fx 320, fy 79.9 and no
    error. Now it is counted (errors_camera_info) and named in a WARN; a binned CameraInfo of the same
    camera (twice the image size, binning 2) is served as the image's projection."""
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node = start_node('vidseg_ros.ros.segment_node', {**PARAMS, 'use_camera_info': True,
                                                      'diagnostics_period_s': 0.5})
    masks = probe.collect(Image, f'{OUT}/mask', reliable)
    infos = probe.collect(CameraInfo, f'{OUT}/camera_info', reliable)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub, pub_info = probe.publishers(node, (Image, 'image'), (CameraInfo, 'camera_info'))
    rgb = cv2.resize(real_frames[0], (64, 48))
    stamp = 1_700_000_000_000_000_000
    msg = image_msg(rgb, stamp)
    pub_info.publish(sensor_info(32, 97, header=msg.header))
    pub.publish(msg)
    probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 60, 'mask despite a bad camera_info', node)

    def warned():
        status = next((s for arr in reversed(diags) for s in arr.status if s.name.endswith(': image')), None)
        return (status is not None and status.level == DiagnosticStatus.WARN
                and diag_values(status).get('errors_camera_info') == '1' and '32x97' in status.message
                and '64x48' in status.message)
    probe.wait_for(warned, 20, 'a WARN naming both sizes', node)
    assert infos == []
    msg = image_msg(rgb, stamp + 66_666_667)
    binned = sensor_info(128, 96, binning=(2, 2), header=msg.header)
    pub_info.publish(binned)
    pub.publish(msg)
    probe.wait_for(lambda: len(infos) == 1, 60, 'the binned camera_info, served', node)
    assert (infos[0].width, infos[0].height, infos[0].binning_x) == (64, 48, 0)
    np.testing.assert_allclose(infos[0].k, np.array(binned.k) * [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1, 1, 1])
    assert 'Traceback' not in node.log()


def _camera_status(diags, camera='image'):
    return next((s for arr in reversed(diags) for s in arr.status if s.name.endswith(f': {camera}')), None)


def test_a_stamp_ahead_of_our_clock_is_clock_skew_not_a_latency(start_node, probe, real_frames):
    """Stamps up to 10 s ahead counted as sane: end_to_end_ms_p50 -55.1 and an OK "end-to-end p50 -55.1 ms"."""
    import time
    node = start_node('vidseg_ros.ros.segment_node', {**PARAMS, 'diagnostics_period_s': 0.2})
    masks = probe.collect(Image, f'{OUT}/mask')
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    stamp = time.time_ns() + 2 * 10**9
    pub.publish(image_msg(cv2.resize(real_frames[0], (64, 48)), stamp))
    probe.wait_for(lambda: masks, 60, 'the mask', node)

    def counted():
        status = _camera_status(diags)
        return status is not None and diag_values(status)['frames_out'] == '1'
    probe.wait_for(counted, 20, 'diagnostics of the frame', node)
    values = diag_values(_camera_status(diags))
    assert values['clock_skew_stamps'] == '1' and 1900 < float(values['clock_skew_ms_max']) < 2100, values
    assert 'end_to_end_ms_p50' not in values and 'transport_ms_p50' not in values, values
    assert 'end-to-end' not in _camera_status(diags).message


def test_diagnostics_flow_with_sim_time_and_no_clock(start_node, probe):
    """use_sim_time with no /clock publisher: the ROS-clock timer never fired, no /diagnostics at all."""
    node = start_node('vidseg_ros.ros.segment_node', {**PARAMS, 'use_sim_time': True, 'diagnostics_period_s': 0.2})
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    probe.wait_for(lambda: len(diags) >= 3, 60, '/diagnostics without /clock', node)
    assert _camera_status(diags) is not None
