"""segment_node features users ask for (issue 7), each across processes with real rclpy/FastDDS."""
from __future__ import annotations

import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from support.ros_helpers import ROOT, Lifecycle, call_service, diag_values, image_msg, stamp_of
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from vidseg_ros.ros.conversions import pinhole_camera_info, rgb8_to_compressed_msg

NODE = 'vidseg_ros.ros.segment_node'
SMALL = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'diagnostics_period_s': 0.5,
         'input_reliability': 'reliable'}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def as_array(msg) -> np.ndarray:
    dtype = np.float32 if msg.encoding == '32FC1' else np.uint8
    arr = np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width, -1)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def header(stamp_ns: int, frame_id='camera') -> Header:
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def status(diags, camera='image', node=None):
    """The latest status of ``camera`` (of ``node`` only, when given: two nodes publish one camera's name)."""
    for arr in reversed(diags):
        for st in arr.status:
            if st.name.endswith(f': {camera}') and (node is None or st.name == f'/{node}: {camera}'):
                return st
    return None


def send_and_wait(probe, pub, msg, outputs, node, what='outputs'):
    """Publish one frame and wait until every list in ``outputs`` holds a message with its stamp."""
    stamp = stamp_of(msg)
    pub.publish(msg)
    probe.wait_for(lambda: all(any(stamp_of(m) == stamp for m in out) for out in outputs), 60, what, node)
    return [next(m for m in out if stamp_of(m) == stamp) for out in outputs]


def set_params(probe, node_name, proc, **params):
    msgs = []
    for name, value in params.items():
        if isinstance(value, bool):
            v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            v = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        msgs.append(ParameterMsg(name=name, value=v))
    request = SetParameters.Request(parameters=msgs)
    return call_service(probe, proc, SetParameters, f'/{node_name}/set_parameters', request).results


def test_compressed_input_gives_the_raw_mask_within_jpeg_loss(start_node, probe, real_frames):
    # A trained model: random weights would turn jpeg noise into label noise.
    if not (ROOT / 'models' / 'camvid_fpn.pt').is_file():
        pytest.skip('needs the shipped trained model models/camvid_fpn.pt')
    params = {'model': 'camvid_fpn', 'input_reliability': 'reliable', 'diagnostics_period_s': 0.5}
    raw = start_node(NODE, params, name='seg_raw')
    jpg = start_node(NODE, {**params, 'transport': 'compressed'}, name='seg_jpeg')
    raw_masks = probe.collect(Image, '/seg_raw/mask', RELIABLE)
    jpg_masks = probe.collect(Image, '/seg_jpeg/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub_raw = probe.node.create_publisher(Image, 'image', RELIABLE)
    pub_jpg = probe.node.create_publisher(CompressedImage, 'image/compressed', RELIABLE)
    probe.wait_for_subscribers(pub_raw, proc=raw, timeout=60)
    probe.wait_for_subscribers(pub_jpg, proc=jpg, timeout=60)
    time.sleep(1.0)
    agreement = []
    for i, rgb in enumerate(real_frames[:3]):
        stamp = 1_700_000_000_000_000_000 + i * 10**8
        pub_raw.publish(image_msg(rgb, stamp))
        pub_jpg.publish(rgb8_to_compressed_msg(rgb, header(stamp), 'jpeg', 95))
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in raw_masks)
                       and any(stamp_of(m) == stamp for m in jpg_masks), 90, f'masks of frame {i}', jpg)
        a = as_array(next(m for m in raw_masks if stamp_of(m) == stamp))
        b = as_array(next(m for m in jpg_masks if stamp_of(m) == stamp))
        assert a.shape == b.shape == rgb.shape[:2]
        agreement.append((a == b).mean())
    assert min(agreement) > 0.9, f'jpeg vs raw mask agreement {agreement}'
    # A corrupt jpeg is reported and the node goes on with the next frame.
    bad = CompressedImage(header=header(time.time_ns()), format='jpeg')
    bad.data = b'\xff\xd8\xff\xe0' + b'\x13' * 500
    pub_jpg.publish(bad)
    # the status of seg_jpeg itself: the latest one for camera 'image' was as often seg_raw's (a flaky wait)
    probe.wait_for(lambda: (st := status(diags, node='seg_jpeg')) is not None
                   and st.level == DiagnosticStatus.WARN and 'bad_input' in st.message, 20, 'WARN on corrupt jpeg', jpg)
    good = time.time_ns()
    pub_jpg.publish(rgb8_to_compressed_msg(real_frames[0], header(good), 'jpeg', 90))
    probe.wait_for(lambda: any(stamp_of(m) == good for m in jpg_masks), 60, 'mask after the corrupt jpeg', jpg)


def test_camera_info_is_rescaled_to_the_mask_and_bad_info_is_reported(start_node, probe, real_frames):
    # 100x150 is no multiple of the stride: the network input is padded to 128x160, but the published
    # images (and camera_info) are the resized frame, 100x150, not stretched over the padding
    node = start_node(NODE, {**SMALL, 'use_camera_info': True, 'mask_resolution': 'network', 'input_hw': [100, 150],
                             'publish_confidence': True, 'class_prob_index': 1})
    outputs = {name: probe.collect(Image, f'/vidseg_segmenter/{name}', RELIABLE)
               for name in ('color_mask', 'overlay', 'confidence', 'class_prob')}
    masks = probe.collect(Image, '/vidseg_segmenter/mask', RELIABLE)
    infos = probe.collect(CameraInfo, '/vidseg_segmenter/camera_info', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub, pub_info = probe.publishers(node, (Image, 'image'), (CameraInfo, 'camera_info'))
    rgb = real_frames[0]
    h, w = rgb.shape[:2]
    stamp = time.time_ns()
    info = pinhole_camera_info(w, h, header(stamp))
    pub_info.publish(info)
    mask, out_info, *images = send_and_wait(probe, pub, image_msg(rgb, stamp), [masks, infos, *outputs.values()],
                                            node)
    assert (mask.height, mask.width) == (100, 150)  # network resolution
    assert [(m.height, m.width) for m in images] == [(100, 150)] * 4
    assert (out_info.width, out_info.height) == (150, 100)
    sx, sy = 150 / w, 100 / h
    assert out_info.k[0] == pytest.approx(info.k[0] * sx) and out_info.k[2] == pytest.approx(info.k[2] * sx)
    assert out_info.k[4] == pytest.approx(info.k[4] * sy) and out_info.k[5] == pytest.approx(info.k[5] * sy)
    assert out_info.p[0] == pytest.approx(info.p[0] * sx) and out_info.header.stamp == mask.header.stamp
    for bad, words in [(CameraInfo(header=header(0), width=0, height=0), 'zero size'),
                       (pinhole_camera_info(w, h, header(0, 'other_camera')), 'unknown camera')]:
        stamp = time.time_ns()
        bad.header.stamp = header(stamp).stamp
        pub_info.publish(bad)
        pub.publish(image_msg(rgb, stamp))
        probe.wait_for(lambda: (st := status(diags)) is not None and st.level == DiagnosticStatus.WARN
                       and words in st.message, 20, f'WARN about {words}', node)
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, 'mask despite bad camera_info', node)
    assert node.alive()


def test_two_cameras_one_model_independent_outputs_and_state(start_node, probe, real_frames):
    node = start_node(NODE, {**SMALL, 'cameras': ['front', 'rear'], 'keyframe_interval': 3})
    front = probe.collect(Image, '/vidseg_segmenter/front/mask', RELIABLE)
    rear = probe.collect(Image, '/vidseg_segmenter/rear/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub_front, pub_rear = probe.publishers(node, 'front/image', 'rear/image', msg_type=Image)
    base = 1_700_000_000_000_000_000
    for i in range(4):
        send_and_wait(probe, pub_front, image_msg(real_frames[i], base + i * 66_000_000, 'front'), [front], node)
    send_and_wait(probe, pub_rear, image_msg(real_frames[8][::-1].copy(), base + 5 * 10**8, 'rear'), [rear], node)
    assert [m.header.frame_id for m in front] == ['front'] * 4 and [m.header.frame_id for m in rear] == ['rear']
    probe.wait_for(lambda: status(diags, 'rear') is not None
                   and diag_values(status(diags, 'rear'))['frames_out'] == '1'
                   and diag_values(status(diags, 'front'))['frames_out'] == '4', 10, 'per-camera diagnostics', node)
    f, r = diag_values(status(diags, 'front')), diag_values(status(diags, 'rear'))
    # interval 3: front frames 0 and 3 are key frames; rear's first frame is a key frame of its own state.
    assert (f['key_frames'], r['key_frames']) == ('2', '1')


def test_runtime_parameters_confidence_and_checkpoint_swap(start_node, probe, real_frames):
    node = start_node(NODE, {**SMALL, 'confidence_encoding': '32FC1', 'class_prob_index': 3})
    name = 'vidseg_segmenter'
    outs = {t: probe.collect(Image, f'/{name}/{t}', RELIABLE)
            for t in ('mask', 'color_mask', 'overlay', 'confidence', 'class_prob')}
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    tables = probe.collect(String, f'/{name}/class_table', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                                      durability=1))
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    order = list(outs.values())
    rgb = real_frames[0]
    mask, color, over, conf, prob = send_and_wait(probe, pub, image_msg(rgb, time.time_ns()), order, node)
    ids, c, p = as_array(mask), as_array(conf), as_array(prob)
    assert conf.encoding == '32FC1' and c.min() >= 1 / 11 - 1e-4 and c.max() <= 1 + 1e-5
    np.testing.assert_allclose(p[ids == 3], c[ids == 3], atol=1e-5)   # chosen class: its probability
    assert (p[ids != 3] <= c[ids != 3] + 1e-6).all()
    probe.wait_for(lambda: len(tables) > 0, 10, 'latched class table', node)
    assert '"name"' in tables[-1].data

    # Parameters apply on the next frame.
    assert all(r.successful for r in set_params(probe, name, node, overlay_alpha=0.0, keyframe_interval=1))
    _, _, over, *_ = send_and_wait(probe, pub, image_msg(rgb, time.time_ns()), order, node)
    assert (as_array(over) == rgb).all()
    assert all(r.successful for r in set_params(probe, name, node, overlay_alpha=1.0))
    _, color, over, *_ = send_and_wait(probe, pub, image_msg(rgb, time.time_ns()), order, node)
    assert (as_array(over) == as_array(color)).all()
    refused = set_params(probe, name, node, transport='compressed')
    assert not refused[0].successful and 'start-up' in refused[0].reason
    assert not set_params(probe, name, node, precision='fp64')[0].successful

    # Checkpoint swap mid-stream; a missing file keeps the current model serving.
    assert all(r.successful for r in set_params(probe, name, node, model='untrained:recurrent_unet'))
    send_and_wait(probe, pub, image_msg(rgb, time.time_ns()), order, node)
    probe.wait_for(lambda: 'recurrent_unet' in diag_values(status(diags))['model'], 10, 'model swapped', node)
    refused = set_params(probe, name, node, model='/nonexistent/model.pt')   # refused before any load
    assert not refused[0].successful and 'not found' in refused[0].reason
    send_and_wait(probe, pub, image_msg(rgb, time.time_ns()), order, node)
    assert 'recurrent_unet' in diag_values(status(diags))['model'] and node.alive()


def test_lifecycle_node_loads_activates_and_releases(start_node, probe, real_frames):
    lc = start_node('vidseg_ros.ros.segment_lifecycle_node', SMALL)
    masks = probe.collect(Image, '/vidseg_segmenter/mask', RELIABLE)
    transition = Lifecycle(probe, lc).transition   # fails when refused; a lost answer is looked up
    pub = probe.node.create_publisher(Image, 'image', RELIABLE)

    time.sleep(0.5)
    assert pub.get_subscription_count() == 0          # unconfigured: no topics, no model
    transition(Transition.TRANSITION_CONFIGURE)
    assert 'untrained:keyframe_fpn' in lc.log()       # the model is loaded on configure
    transition(Transition.TRANSITION_ACTIVATE)
    probe.wait_for_subscribers(pub, proc=lc)
    time.sleep(1.0)
    send_and_wait(probe, pub, image_msg(real_frames[0], time.time_ns()), [masks], lc)
    transition(Transition.TRANSITION_DEACTIVATE)
    probe.wait_for(lambda: pub.get_subscription_count() == 0, 10, 'subscription removed', lc)
    # the answer's message is what is checked: a dropped answer fails saying so
    answer = call_service(probe, lc, Trigger, '/vidseg_segmenter/reset', Trigger.Request(), answer_s=10)
    assert not answer.success and 'not serving' in answer.message   # nothing to reset
    transition(Transition.TRANSITION_CLEANUP)
    transition(Transition.TRANSITION_CONFIGURE)       # and it can load again
    assert lc.alive()


def test_network_resolution_masks_from_the_first_frame_when_the_network_follows_the_frame(start_node, probe,
                                                                                         tmp_path):
    """A model with no input size runs at each frame's size; mask_resolution 'network' asked the engine for
    its last frame's size, which before the first frame is (0, 0): that frame was lost to a ZeroDivisionError."""
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    model = create_model('keyframe_fpn', width_mult=0.25)
    path = save_checkpoint(tmp_path / 'free_size.pt', model, default_meta('keyframe_fpn', model.arch_config,
                                                                          input_hw=()))
    node = start_node(NODE, {**SMALL, 'model': str(path), 'input_hw': [], 'mask_resolution': 'network'})
    masks = probe.collect(Image, '/vidseg_segmenter/mask', RELIABLE)
    (pub,) = probe.publishers(node, (Image, 'image'))
    rgb = np.random.default_rng(0).integers(0, 255, (100, 130, 3), dtype=np.uint8)
    (mask,) = send_and_wait(probe, pub, image_msg(rgb, time.time_ns()), [masks], node, 'the first mask')
    assert (mask.height, mask.width) == (100, 130)   # the frame's size: the padding to the stride (32) is not shown
    assert node.alive()
