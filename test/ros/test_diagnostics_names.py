"""Two instances never share a /diagnostics status name: each status is named after the node's fully qualified
name (two segmenters in /a and /b both published "vidseg_segmenter: image", two recorders renamed rec1 and
rec2 both "vidseg_recorder": counts interleaved under one name, an aggregator showed one camera)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from support.ros_helpers import NodeProcess, image_msg

SEGMENTER = {'model': 'untrained:keyframe_fpn', 'input_hw': [32, 64], 'diagnostics_period_s': 0.3,
             'input_reliability': 'reliable'}
RECORDER = {'topics': ['/tr/image'], 'bag_prefix': 'names', 'discovery_period_s': 0.2,
            'diagnostics_period_s': 0.3, 'min_free_disk_bytes': 0}


def _names(diags) -> set[str]:
    return {st.name for arr in list(diags) for st in arr.status}


def test_two_namespaced_segmenters_and_two_renamed_recorders_have_distinct_status_names(start_node, probe,
                                                                                         tmp_path):
    segmenters = [start_node('vidseg_ros.ros.segment_node', SEGMENTER, {'__ns': ns}) for ns in ('/a', '/b')]
    recorders = [start_node('vidseg_ros.ros.recorder_node', {**RECORDER, 'output_dir': str(tmp_path / name)},
                            name=name) for name in ('rec1', 'rec2')]
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    pub = probe.node.create_publisher(Image, '/tr/image', 10)
    want = {'/a/vidseg_segmenter: image', '/b/vidseg_segmenter: image',
            '/rec1', '/rec1: /tr/image', '/rec2', '/rec2: /tr/image'}
    deadline = time.monotonic() + 90
    while not want <= _names(diags) and time.monotonic() < deadline:
        pub.publish(image_msg(np.zeros((8, 8, 3), np.uint8), time.time_ns()))   # the recorders' topic appears
        for proc in segmenters + recorders:
            if not proc.alive():
                pytest.fail(f'a node died:\n{proc.log()[-3000:]}')
        time.sleep(0.2)
    names = _names(diags)
    assert want <= names, sorted(names)
    assert not names & {'vidseg_segmenter: image', 'vidseg_recorder', 'vidseg_recorder: /tr/image'}, sorted(names)
