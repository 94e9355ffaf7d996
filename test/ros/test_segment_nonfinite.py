"""segment_node and a model whose finite weights overflow (NaN/inf logits on every frame): it published a
constant class-0 mask with status OK. Now it does not start with it, and keeps its model when switched to it."""
from __future__ import annotations

import time

import pytest
import torch
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Image
from support.ros_helpers import call_service, image_msg

NODE = 'vidseg_ros.ros.segment_node'
UNTRAINED = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'input_reliability': 'reliable',
             'input_depth': 1}


@pytest.fixture
def overflowing_model(tmp_path):
    """keyframe_fpn with BatchNorm biases of 3e38: finite, so the file loads, but the next layer's sums overflow
    on any frame, the blank warm-up frame included."""
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', width_mult=0.25)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(3e38)
    meta = default_meta('keyframe_fpn', model.arch_config, input_hw=[96, 128],
                        provenance={'trained': True, 'data': 'test'})
    return save_checkpoint(tmp_path / 'overflowing.pt', model, meta)


def test_a_model_giving_nan_does_not_start_with_one_line(start_node, overflowing_model):
    node = start_node(NODE, {**UNTRAINED, 'model': str(overflowing_model)})
    assert node.proc.wait(timeout=60) == 2, node.log()
    assert 'overflowing.pt) gives NaN or inf on a blank 96x128 warm-up frame on cpu (fp32)' in node.log(), node.log()
    assert 'Traceback' not in node.log()


def test_switching_to_a_model_giving_nan_keeps_the_old_one_serving(start_node, probe, real_frames,
                                                                  overflowing_model):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    node = start_node(NODE, UNTRAINED)
    masks = probe.collect(Image, '/vidseg_segmenter/mask')
    pub = probe.node.create_publisher(Image, 'image', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    probe.wait_for_subscribers(pub, proc=node, timeout=60)
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(overflowing_model))
    call_service(probe, node, SetParameters, '/vidseg_segmenter/set_parameters',
                 SetParameters.Request(parameters=[ParameterMsg(name='model', value=value)]))
    time.sleep(1.0)   # the output publishers discover our subscription
    pub.publish(image_msg(real_frames[0], time.time_ns()))   # the worker loads a new model before its next frame
    probe.wait_for(lambda: masks, 60, 'a mask from the old model', node)
    assert 'gives NaN or inf on a blank 96x128 warm-up frame' in node.log(), node.log()
    assert 'keeping keyframe_fpn (untrained:keyframe_fpn)' in node.log(), node.log()
    assert node.alive and 'Traceback' not in node.log()
