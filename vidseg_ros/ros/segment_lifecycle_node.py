"""segment_lifecycle_node: the managed (lifecycle) variant of segment_node.

configure loads the model, activate creates the topics and starts inference, deactivate stops them,
cleanup releases the model and its GPU memory. Same parameters, topics and services as segment_node.
"""
import sys

from vidseg_ros.ros.segment_node import SegmentLifecycleNode, run


def main(args=None) -> int:
    return run(SegmentLifecycleNode, args)


if __name__ == '__main__':
    sys.exit(main())
