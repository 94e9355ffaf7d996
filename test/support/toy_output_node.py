"""segment_node with one more entry in engine.outputs.OUTPUTS and nothing else changed: the test that a
new output topic is one table entry. ``~/edges`` is mono8, 255 where the class id differs from the pixel
to the left. Run as `python -m toy_output_node --ros-args ...` with this folder on PYTHONPATH."""
import sys

import numpy as np

from vidseg_ros.engine import outputs
from vidseg_ros.ros import segment_node


def edges(frame: outputs.FrameImages) -> np.ndarray:
    ids = frame.result.class_ids
    out = np.zeros_like(ids)
    out[:, 1:] = np.where(ids[:, 1:] != ids[:, :-1], 255, 0)
    return out


if __name__ == '__main__':   # the entry is added only in the node's process, never in a test's
    outputs.OUTPUTS = outputs.OUTPUTS + (outputs.Output('edges', 'publish_mask', 'mono8', edges),)
    sys.exit(segment_node.main())
