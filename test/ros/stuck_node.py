"""segment_node / segment_lifecycle_node whose work blocks for real, for the tests of how a node ends.

VIDSEG_STUCK_NODE: 'segment_node' (default) or 'segment_lifecycle_node'.
- frame_id 'block': the engine's step never returns (waits on an Event nobody sets), as a step hung in a
  driver or a deadlocked library would.
- VIDSEG_STUCK_LOAD=<seconds>: every model load takes that long (sleeps first), as a large model on a slow
  disk, a first CUDA initialisation or torch.compile's warm-up does; only loads of VIDSEG_STUCK_LOAD_MODEL
  when that is set.
Run as `python -m stuck_node --ros-args ...` with this folder on PYTHONPATH (test_node_ends.py).
"""
import os
import sys
import threading
import time

from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.ros import camera_stream, segment_lifecycle_node, segment_node

_process, _step, _load = camera_stream.CameraStream.process, StreamSegmenter.step, segment_node.load_engine
_frame = threading.local()
_never = threading.Event()


def process(self, job, cfg, table):
    _frame.id = job.msg.header.frame_id
    return _process(self, job, cfg, table)


def step(self, *args, **kwargs):
    if getattr(_frame, 'id', '') == 'block':
        print('stuck_node: step blocked', flush=True)
        _never.wait()
    return _step(self, *args, **kwargs)


def load_engine(cfg):
    delay = float(os.environ.get('VIDSEG_STUCK_LOAD', '0'))
    if delay and os.environ.get('VIDSEG_STUCK_LOAD_MODEL', cfg.model) == cfg.model:
        print(f'stuck_node: loading for {delay} s', flush=True)
        time.sleep(delay)
    return _load(cfg)


camera_stream.CameraStream.process = process
StreamSegmenter.step = step
segment_node.load_engine = load_engine

if __name__ == '__main__':
    which = os.environ.get('VIDSEG_STUCK_NODE', 'segment_node')
    sys.exit({'segment_node': segment_node, 'segment_lifecycle_node': segment_lifecycle_node}[which].main())
