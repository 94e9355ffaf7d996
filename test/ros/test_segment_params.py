"""segment_node parameters at run time (issue 11): nonsense refused with a reason, arrays as ROS delivers
them accepted and applied, a failing model swap leaves the parameter equal to the model serving."""
from __future__ import annotations

import math
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from lifecycle_msgs.msg import Transition
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from support.ros_helpers import ROOT, Lifecycle, call_service, image_msg, stamp_of
from sensor_msgs.msg import Image

NODE = 'vidseg_ros.ros.segment_node'
NAME = 'vidseg_segmenter'
SMALL = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'diagnostics_period_s': 0.5,
         'input_reliability': 'reliable'}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def value_msg(value) -> ParameterValue:
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    if isinstance(value, list) and any(isinstance(v, str) for v in value):
        return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
    if isinstance(value, list):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)


def call(probe, proc, srv_type, service, request):
    """``service`` of the node under test; an answer FastDDS dropped is asked again (ros_helpers.call_service)."""
    return call_service(probe, proc, srv_type, f'/{NAME}/{service}', request)


def set_param(probe, proc, name, value):
    req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value_msg(value))])
    return call(probe, proc, SetParameters, 'set_parameters', req).results[0]


def get_param(probe, proc, name):
    """The parameter's value message, or None while it is unset (e.g. an empty array parameter)."""
    values = call(probe, proc, GetParameters, 'get_parameters', GetParameters.Request(names=[name])).values
    return values[0] if values else None


def transition(probe, proc, tid) -> None:
    """Have the lifecycle node make a transition (Transition.TRANSITION_*); fails when it is refused (a lost answer
    is looked up: ros_helpers.Lifecycle)."""
    Lifecycle(probe, proc, NAME).transition(tid)


def lifecycle_state(probe, proc) -> str:
    return Lifecycle(probe, proc, NAME).state()


def send(probe, pub, rgb, outputs, node):
    stamp = time.time_ns()
    pub.publish(image_msg(rgb, stamp))
    probe.wait_for(lambda: all(any(stamp_of(m) == stamp for m in out) for out in outputs), 60, 'outputs', node)
    return [next(m for m in out if stamp_of(m) == stamp) for out in outputs]


def as_array(msg) -> np.ndarray:
    arr = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, -1)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


NONSENSE = [('keyframe_interval', -1), ('keyframe_interval', 0), ('overlay_alpha', 7.5),
            ('overlay_alpha', math.nan), ('max_gap_s', -1.0), ('keyframe_threshold', math.nan),
            ('tile_size', -5), ('error_throttle_s', -1.0), ('class_prob_index', 99), ('input_hw', [0, 0]),
            ('input_hw', [96]), ('palette', [0, 300, 0]), ('class_remap', [1, 2]), ('device', 'cuda:9'),
            ('device', 'banana'), ('model', '/nonexistent/model.pt'), ('max_input_pixels', 0)]


def test_nonsense_refused_arrays_applied_failed_swap_rolled_back(start_node, probe, real_frames, tmp_path):
    node = start_node(NODE, SMALL)
    masks = probe.collect(Image, f'/{NAME}/mask', RELIABLE)
    colors = probe.collect(Image, f'/{NAME}/color_mask', RELIABLE)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    rgb = real_frames[0]
    send(probe, pub, rgb, [masks], node)

    for name, value in NONSENSE:
        before = get_param(probe, node, name)
        r = set_param(probe, node, name, value)
        assert not r.successful and r.reason, f'{name}={value!r} accepted'
        assert get_param(probe, node, name) == before, f'{name} changed although refused'

    # Arrays as rclpy delivers them (array.array) are accepted and applied on the next frame.
    for name, value in [('input_hw', [64, 96]), ('palette', [255, 0, 0] * 11),
                        ('class_remap', list(range(20, 31))), ('mask_resolution', 'network')]:
        r = set_param(probe, node, name, value)
        assert r.successful, f'{name}={value}: {r.reason}'
    mask, color = send(probe, pub, rgb, [masks, colors], node)
    assert (mask.height, mask.width) == (64, 96)                       # input_hw applied
    assert (as_array(color) == [255, 0, 0]).all()                      # palette applied
    assert set(np.unique(as_array(mask))) <= set(range(20, 31))        # class_remap applied
    assert set_param(probe, node, 'ignore_classes', list(range(11))).successful
    (mask,) = send(probe, pub, rgb, [masks], node)
    assert (as_array(mask) == 255).all()                               # every class ignored
    # `ros2 param set ... '[]'` sends an empty BOOL_ARRAY: refused as 'Wrong parameter type' by the typed
    # arrays, so a remap or an ignore list could not be cleared without a restart
    empty = ParameterValue(type=ParameterType.PARAMETER_BOOL_ARRAY, bool_array_value=[])
    for name in ('ignore_classes', 'class_remap'):
        r = call(probe, node, SetParameters, 'set_parameters',
                 SetParameters.Request(parameters=[ParameterMsg(name=name, value=empty)])).results[0]
        assert r.successful, f'{name}=[]: {r.reason}'
        assert get_param(probe, node, name).type == ParameterType.PARAMETER_INTEGER_ARRAY
    (mask,) = send(probe, pub, rgb, [masks], node)
    assert set(np.unique(as_array(mask))) <= set(range(11)) and not (as_array(mask) == 255).all()   # cleared

    # A file that resolves and looks like a checkpoint but does not load: refused later, rolled back.
    fake = tmp_path / 'broken.pt'
    with zipfile.ZipFile(fake, 'w') as z:
        z.writestr('archive/data.pkl', b'not a pickle')
    assert set_param(probe, node, 'model', str(fake)).successful
    send(probe, pub, rgb, [masks], node)   # the worker tries the load between frames
    probe.wait_for(lambda: 'cannot load model' in node.log(), 30, 'the failed load', node)
    deadline = time.monotonic() + 10   # (not probe.wait_for: get_param itself waits on the probe)
    while get_param(probe, node, 'model').string_value != 'untrained:keyframe_fpn':
        assert time.monotonic() < deadline, 'model parameter not rolled back to the serving model'
        time.sleep(0.1)
    send(probe, pub, rgb, [masks], node)
    assert node.alive()


def test_ranges_are_in_the_descriptors(start_node, probe):
    node = start_node(NODE, SMALL)
    req = DescribeParameters.Request(names=['overlay_alpha', 'keyframe_interval', 'input_hw'])
    d_alpha, d_interval, d_hw = call(probe, node, DescribeParameters, 'describe_parameters', req).descriptors
    rng = d_alpha.floating_point_range[0]
    assert (rng.from_value, rng.to_value) == (0.0, 1.0)
    assert d_interval.integer_range[0].from_value == 1
    assert '8..8192' in d_hw.additional_constraints and '0 or 2' in d_hw.additional_constraints


# A camera twice was served twice (two subscriptions, every mask published twice); '/a' and 'a/' are not
# other spellings of 'a' (no name is normalised) but names that are not relative namespaces.
@pytest.mark.parametrize('param', ['input_hw:=[0,0]', 'overlay_alpha:=7.5', 'keyframe_interval:=0',
                                   'cameras:=[a,a]', 'cameras:=[a,/a]', 'cameras:=[a,a/]', "cameras:=['']"])
def test_bad_startup_parameter_is_one_clear_line(param):
    proc = subprocess.run([sys.executable, '-m', NODE, '--ros-args', '-p', 'model:=untrained:keyframe_fpn',
                           '-p', param], capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    name = param.split(':=')[0]
    lines = [ln for ln in proc.stderr.splitlines() if name in ln]
    assert len(lines) == 1, proc.stderr[-2000:]


def test_cameras_while_inactive_refused_when_repeated_or_not_a_namespace(start_node, probe):
    """Start-up-only settings can change while the lifecycle node is not serving: the same checks apply."""
    node = start_node('vidseg_ros.ros.segment_lifecycle_node', SMALL)   # unconfigured: nothing loaded
    for cameras, words in [(['a', 'a'], 'more than once'), (['a', '/a'], 'not a relative namespace')]:
        r = set_param(probe, node, 'cameras', cameras)
        assert not r.successful and words in r.reason, f'cameras {cameras} accepted'
    assert set_param(probe, node, 'cameras', ['front', 'car/rear']).successful
    assert list(get_param(probe, node, 'cameras').string_array_value) == ['front', 'car/rear']


def test_model_that_does_not_resolve_is_refused_at_set_time_while_unconfigured_or_inactive(start_node, probe):
    """`ros2 param set ... model nonexistent` on the lifecycle node: refused there and then with the reason
    (the same parameter callback as while active), not accepted and failing later on configure/activate."""
    node = start_node('vidseg_ros.ros.segment_lifecycle_node', SMALL)   # unconfigured: nothing loaded
    for state in ('unconfigured', 'inactive'):
        for model in ('nonexistent', '/nonexistent/model.pt'):
            r = set_param(probe, node, 'model', model)
            assert not r.successful and 'not found' in r.reason and model in r.reason, (state, model, r.reason)
            assert get_param(probe, node, 'model').string_value == SMALL['model']
        if state == 'unconfigured':
            transition(probe, node, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(probe, node) == 'inactive'


def test_model_that_fails_to_load_on_activate_is_rolled_back_and_the_old_one_serves(start_node, probe, real_frames,
                                                                                   tmp_path):
    """A model set while inactive loads on activate. One that resolves but does not load (random bytes
    after ONNX's first byte in an .onnx) made activate fail with nothing logged and dropped the node to unconfigured, model gone."""
    node = start_node('vidseg_ros.ros.segment_lifecycle_node', SMALL)
    masks = probe.collect(Image, f'/{NAME}/mask', RELIABLE)
    transition(probe, node, Transition.TRANSITION_CONFIGURE)
    garbage = tmp_path / ('a_robot_s_long_model_folder_' * 6) / 'garbage.onnx'   # a 170-character folder
    garbage.parent.mkdir()
    # ONNX's first byte, so that the parameter check (guards.check_model_spec) passes it and the load fails
    garbage.write_bytes(b'\x08' + np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    assert set_param(probe, node, 'model', str(garbage)).successful
    transition(probe, node, Transition.TRANSITION_ACTIVATE)
    assert lifecycle_state(probe, node) == 'active'
    error = [ln for ln in node.log().splitlines() if '[ERROR]' in ln]
    assert len(error) == 1 and 'cannot load model' in error[0] and 'garbage.onnx' in error[0], node.log()[-2000:]
    # the loader's advice comes after the path it names: a long path clipped at 200 characters cut it off
    assert 're-copy or re-export' in error[0], error[0]
    assert get_param(probe, node, 'model').string_value == SMALL['model']   # back to the model that serves
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    send(probe, pub, real_frames[0], [masks], node)
