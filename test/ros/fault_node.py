"""segment_node with faults injected by frame_id, for tests only (production code has no fault hooks).

- frame_id 'engine_fault': the engine raises cv2.error, an exception the old worker did not expect.
- frame_id 'kill_worker': the worker thread raises a BaseException, as a bug that escapes every
  per-frame handler would; the node must report ERROR and exit non-zero.
Run as `python -m fault_node --ros-args ...` with this folder on PYTHONPATH.
"""
import sys

import cv2

from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.ros import camera_stream, segment_node


class InjectedFault(BaseException):
    """Not an Exception: nothing per frame may catch it."""


_process, _step = camera_stream.CameraStream.process, StreamSegmenter.step
_frame = {}


def process(self, job, cfg, table):
    if job.msg.header.frame_id == 'kill_worker':
        raise InjectedFault('injected by the test')
    _frame['id'] = job.msg.header.frame_id
    return _process(self, job, cfg, table)


def step(self, *args, **kwargs):
    if _frame.get('id') == 'engine_fault':
        raise cv2.error('injected OpenCV failure')
    return _step(self, *args, **kwargs)


camera_stream.CameraStream.process = process
StreamSegmenter.step = step

if __name__ == '__main__':
    sys.exit(segment_node.main())
