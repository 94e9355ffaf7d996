"""segment_lifecycle_node driven through its transitions while frames flow (real FastDDS, the node in this
process): parameters set while the worker swaps the model, and rapid cycles, stay consistent."""
from __future__ import annotations

import json
import threading
import time

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from support.ros_helpers import IN_PROCESS, image_msg, spun, stamp_of

from vidseg_ros.ros import segment_node
from vidseg_ros.ros.segment_lifecycle_node import SegmentLifecycleNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 32], 'input_reliability': 'reliable'}
SUCCESS = TransitionCallbackReturn.SUCCESS
HELD = 'untrained:recurrent_unet'   # the model whose load waits at the gate


@pytest.fixture
def held_load(monkeypatch):
    """(entered, opened): a load of HELD waits for ``opened`` after setting ``entered``."""
    entered, opened = threading.Event(), threading.Event()
    load = segment_node.load_engine

    def held(cfg):
        if cfg.model == HELD:
            entered.set()
            opened.wait(60)
        return load(cfg)
    monkeypatch.setattr(segment_node, 'load_engine', held)
    yield entered, opened
    opened.set()


@pytest.fixture
def segmenter():
    overrides = [Parameter(k, value=v) for k, v in PARAMS.items()]
    with spun(lambda context: SegmentLifecycleNode(IN_PROCESS, context=context,
                                                   parameter_overrides=overrides)) as node:
        yield node
        node.core.stop()


def serving(probe, node):
    masks = probe.collect(Image, f'/{IN_PROCESS}/mask', RELIABLE)
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    pub = probe.node.create_publisher(Image, 'image', RELIABLE)
    probe.wait_for_subscribers(pub)
    time.sleep(1.0)   # our mask subscription reaches the node's publisher
    return pub, masks


def until_mask(probe, pub, masks, rgb) -> None:
    """Send frames until one comes back as a mask."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stamp = time.time_ns()
        pub.publish(image_msg(rgb, stamp))
        for _ in range(20):
            time.sleep(0.05)
            with probe.lock:
                if any(stamp_of(m) == stamp for m in masks):
                    return
    raise AssertionError('no mask came back')


def test_class_names_set_while_the_model_swaps_apply_to_the_new_model(segmenter, held_load, probe, real_frames):
    """The worker built the new model's class table from the settings read before its load: class_names set
    during the load were dropped from the table it then served and latched on ~/class_table."""
    entered, opened = held_load
    tables = probe.collect(String, f'/{IN_PROCESS}/class_table', LATCHED)
    pub, masks = serving(probe, segmenter)
    n = len(segmenter.core.engine.classes)
    names = [f'thing{i}' for i in range(n)]
    assert segmenter.set_parameters([Parameter('model', value=HELD)])[0].successful
    pub.publish(image_msg(real_frames[0], time.time_ns()))   # the worker loads HELD before this frame
    assert entered.wait(30), 'the model swap never started'
    assert segmenter.set_parameters([Parameter('class_names', value=names)])[0].successful
    opened.set()
    until_mask(probe, pub, masks, real_frames[1])
    assert 'recurrent_unet' in segmenter.core.engine.model_name
    assert list(segmenter.core.table.names) == names
    time.sleep(0.5)   # the latched table the node published last is what a late subscriber gets
    with probe.lock:
        latched = [c['name'] for c in json.loads(tables[-1].data)['classes']]
    assert latched == names


def test_a_model_set_while_a_failed_load_rolls_back_is_the_one_the_parameter_names(segmenter, probe, real_frames,
                                                                                 tmp_path, monkeypatch):
    """`ros2 param set model B` landing while the worker set the parameters back after model A failed to load:
    the rollback wrote the old model over B, and B was then loaded and served under the old model's name."""
    pub, masks = serving(probe, segmenter)
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'\x08' + bytes(range(256)) * 4)   # passes the parameter check, fails the load
    set_parameters, raced = segmenter.set_parameters, threading.Event()

    def user_sets_b_during_the_rollback(params):
        if threading.current_thread() is segmenter.core.worker and not raced.is_set():
            raced.set()
            user = threading.Thread(target=set_parameters, args=([Parameter('model', value=HELD)],))
            user.start()
            user.join(1.0)   # it lands now, or waits for the rollback to finish
        return set_parameters(params)
    monkeypatch.setattr(segmenter, 'set_parameters', user_sets_b_during_the_rollback)
    assert segmenter.set_parameters([Parameter('model', value=str(garbage))])[0].successful
    until_mask(probe, pub, masks, real_frames[0])
    assert raced.wait(30), 'the failed load never rolled back'
    until_mask(probe, pub, masks, real_frames[1])   # the next frame loads B
    assert 'recurrent_unet' in segmenter.core.engine.model_name
    assert segmenter.get_parameter('model').value == HELD


def test_a_model_set_while_a_failing_load_runs_is_loaded_next_not_rolled_back(segmenter, probe, real_frames,
                                                                             tmp_path, monkeypatch):
    """`ros2 param set model A` (a file that does not load), then B while A loads: A's failure keeps the old model
    serving but must not set the parameter back over B, which the next frame loads."""
    pub, masks = serving(probe, segmenter)
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'\x08' + bytes(range(256)) * 4)   # passes the parameter check, fails the load
    entered, opened = threading.Event(), threading.Event()
    load = segment_node.load_engine

    def held(cfg):
        if cfg.model == str(garbage):
            entered.set()
            opened.wait(60)
        return load(cfg)
    monkeypatch.setattr(segment_node, 'load_engine', held)
    assert segmenter.set_parameters([Parameter('model', value=str(garbage))])[0].successful
    pub.publish(image_msg(real_frames[0], time.time_ns()))   # the worker loads A before this frame
    assert entered.wait(30), 'the load of A never started'
    assert segmenter.set_parameters([Parameter('model', value=HELD)])[0].successful
    opened.set()
    until_mask(probe, pub, masks, real_frames[1])   # A failed: served by the old model, or already by B
    until_mask(probe, pub, masks, real_frames[2])   # B is loaded before this frame at the latest
    assert 'recurrent_unet' in segmenter.core.engine.model_name
    assert segmenter.get_parameter('model').value == HELD
