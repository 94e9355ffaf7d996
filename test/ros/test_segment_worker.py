"""The segmenter's inference worker across deactivate/activate and model swaps, the engine held by a gate.

segment_lifecycle_node's node runs in this process, driven through its lifecycle transitions; frames come
over FastDDS from the probe. The engine's step and load are real, held at a gate the test opens. A
deactivate gives up waiting for a frame after STOP_WAIT_S: that worker used to carry on beside the one the
next activate started, both on one engine (`The size of tensor a (1024) must match ...`, `3 stage names for
4 marked stages`).
"""
from __future__ import annotations

import threading
import time

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from support.ros_helpers import IN_PROCESS, image_msg, spun, stamp_of

from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.ros import segment_node
from vidseg_ros.ros.segment_lifecycle_node import SegmentLifecycleNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 32], 'input_reliability': 'reliable'}
SLOW = 'slow'   # frame_id of a frame whose step waits at the gate
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class Gate:
    """Holds the engine's step on frames marked SLOW (and loads of ``hold_model``) until opened; records
    what touched the engine while a step ran."""

    def __init__(self, monkeypatch):
        self.hold_model = ''
        self.entered, self.opened = threading.Event(), threading.Event()
        self.running = 0        # steps running now
        self.most = 0           # most steps ever running at once
        self.touched_mid_step = []
        self._lock = threading.Lock()
        step, update_config, load = StreamSegmenter.step, StreamSegmenter.update_config, segment_node.load_engine
        frame = threading.local()

        def held_step(engine, rgb, stamp_ns=None, **kw):
            with self._lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                if getattr(frame, 'slow', False):
                    self.entered.set()
                    self.opened.wait(60)
                return step(engine, rgb, stamp_ns, **kw)
            finally:
                with self._lock:
                    self.running -= 1

        def watched_update_config(engine, config):
            if self.running:
                self.touched_mid_step.append('update_config')
            return update_config(engine, config)

        def held_load(cfg):
            if cfg.model == self.hold_model:
                self.entered.set()
                self.opened.wait(60)
            return load(cfg)

        process = segment_node.CameraStream.process

        def marked_process(stream, job, cfg, table):
            frame.slow = job.msg.header.frame_id == SLOW
            return process(stream, job, cfg, table)

        monkeypatch.setattr(StreamSegmenter, 'step', held_step)
        monkeypatch.setattr(StreamSegmenter, 'update_config', watched_update_config)
        monkeypatch.setattr(segment_node, 'load_engine', held_load)
        monkeypatch.setattr(segment_node.CameraStream, 'process', marked_process)


@pytest.fixture
def gate(monkeypatch):
    g = Gate(monkeypatch)
    yield g
    g.opened.set()   # a test that failed half-way leaves no worker waiting


@pytest.fixture
def segmenter(monkeypatch, gate):
    """segment_lifecycle_node's node in this process (unconfigured), spun in a thread; deactivate waits 0.5 s."""
    monkeypatch.setattr(segment_node, 'STOP_WAIT_S', 0.5, raising=False)
    overrides = [Parameter(k, value=v) for k, v in PARAMS.items()]
    with spun(lambda context: SegmentLifecycleNode(IN_PROCESS, context=context,
                                                   parameter_overrides=overrides)) as node:
        yield node
        gate.opened.set()
        node.core.stop()
        if node.core.worker is not None:
            node.core.worker.join(30)


def serving(probe, segmenter):
    """Configure and activate; the probe's image publisher once the node subscribes, and its mask list."""
    masks = probe.collect(Image, f'/{IN_PROCESS}/mask', RELIABLE)
    assert segmenter.trigger_configure() == SUCCESS
    assert segmenter.trigger_activate() == SUCCESS
    pub = probe.node.create_publisher(Image, 'image', RELIABLE)
    probe.wait_for_subscribers(pub)
    time.sleep(1.0)   # our mask subscription reaches the node's publisher
    return pub, masks


def send(probe, pub, frame_id: str, rgb) -> int:
    stamp = time.time_ns()
    pub.publish(image_msg(rgb, stamp, frame_id))
    return stamp


def served(probe, pub, masks, frames) -> None:
    for i, rgb in enumerate(frames):
        stamp = send(probe, pub, 'camera', rgb)
        probe.wait_for(lambda: any(stamp_of(m) == stamp for m in masks), 30, f'mask {i}')


def test_a_worker_left_on_a_frame_by_deactivate_never_runs_beside_the_next(segmenter, gate, probe, real_frames):
    pub, masks = serving(probe, segmenter)
    slow = send(probe, pub, SLOW, real_frames[0])
    assert gate.entered.wait(30), 'the slow frame never reached the engine'
    old = segmenter.core.worker
    assert segmenter.trigger_deactivate() == SUCCESS   # gives up after STOP_WAIT_S, the frame still in the engine
    assert old.is_alive()
    segmenter.set_parameters([Parameter('input_hw', value=[64, 64])])   # applies on the next activate...
    assert segmenter.trigger_activate() == FAILURE     # ...refused while the old worker holds the engine
    assert gate.touched_mid_step == [] and segmenter.core.worker is old
    gate.opened.set()
    old.join(30)
    assert not old.is_alive(), 'the abandoned worker kept running'
    time.sleep(0.5)
    assert not any(stamp_of(m) == slow for m in masks), 'the abandoned worker published after deactivate'
    assert segmenter.trigger_activate() == SUCCESS     # still inactive after the refusal: activates now
    probe.wait_for_subscribers(pub)
    time.sleep(1.0)
    served(probe, pub, masks, real_frames[1:4])
    assert gate.most == 1 and gate.touched_mid_step == []
    assert segmenter.core.engine_cfg.input_hw == [64, 64]   # the change made while inactive applied


def test_a_model_still_loading_when_deactivate_gives_up_is_left_to_the_next_activate(segmenter, gate, probe,
                                                                                    real_frames):
    gate.hold_model = 'untrained:recurrent_unet'
    pub, masks = serving(probe, segmenter)
    segmenter.set_parameters([Parameter('model', value=gate.hold_model)])
    send(probe, pub, 'camera', real_frames[0])     # the worker loads the new model before this frame
    assert gate.entered.wait(30), 'the model swap never started'
    old = segmenter.core.worker
    assert segmenter.trigger_deactivate() == SUCCESS
    assert old.is_alive() and segmenter.trigger_activate() == FAILURE
    gate.opened.set()
    old.join(30)
    assert not old.is_alive(), 'the abandoned worker kept running'
    assert 'keyframe_fpn' in segmenter.core.engine.model_name   # what it loaded after deactivate is dropped
    assert segmenter.trigger_activate() == SUCCESS              # loads the parameters' model itself
    assert 'recurrent_unet' in segmenter.core.engine.model_name
    probe.wait_for_subscribers(pub)
    time.sleep(1.0)
    served(probe, pub, masks, real_frames[1:3])


def test_the_newest_parameters_serve_after_a_change_left_unapplied_by_deactivate(segmenter, gate, probe,
                                                                               real_frames):
    """A change made while active applies before the next frame; deactivated before that frame and set
    again while inactive, the older value used to come back with the first frame after activate."""
    pub, masks = serving(probe, segmenter)
    segmenter.set_parameters([Parameter('keyframe_interval', value=5)])
    assert segmenter.trigger_deactivate() == SUCCESS
    segmenter.set_parameters([Parameter('keyframe_interval', value=7)])
    assert segmenter.trigger_activate() == SUCCESS
    probe.wait_for_subscribers(pub)
    time.sleep(1.0)
    served(probe, pub, masks, real_frames[:1])
    assert segmenter.core.engine_cfg.keyframe_interval == 7


def test_a_parameter_set_while_a_model_loads_keeps_that_model(segmenter, gate, probe, real_frames):
    """The change that arrived during the load was built on the settings before it, and reloaded the old model."""
    gate.hold_model = 'untrained:recurrent_unet'
    pub, masks = serving(probe, segmenter)
    segmenter.set_parameters([Parameter('model', value=gate.hold_model)])
    send(probe, pub, 'camera', real_frames[0])
    assert gate.entered.wait(30), 'the model swap never started'
    segmenter.set_parameters([Parameter('keyframe_interval', value=2)])
    gate.opened.set()
    served(probe, pub, masks, real_frames[1:3])
    assert 'recurrent_unet' in segmenter.core.engine.model_name
    assert segmenter.core.engine_cfg.keyframe_interval == 2
