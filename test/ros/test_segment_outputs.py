"""The node creates, publishes and destroys its image topics from the one table engine.outputs.OUTPUTS:
a toy entry added there (test/support/toy_output_node.py) is published like the built-in ones."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from sensor_msgs.msg import Image
from support.ros_helpers import image_msg, stamp_of

from support.toy_output_node import edges

OUT = '/vidseg_segmenter'
PARAMS = {'model': 'untrained:keyframe_fpn', 'input_hw': [96, 128], 'input_reliability': 'reliable',
          'publish_overlay': False}


def _ids(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)


def test_a_toy_table_entry_is_published_like_the_built_in_outputs(start_node, probe, real_frames, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', str(Path(__file__).parents[1]))   # test/: the support package
    node = start_node('support.toy_output_node', PARAMS)
    masks = probe.collect(Image, f'{OUT}/mask')
    toys = probe.collect(Image, f'{OUT}/edges')
    overlays = probe.collect(Image, f'{OUT}/overlay')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    stamps = [1_700_000_000_000_000_000 + i * 66_666_667 for i in range(2)]
    for i, stamp in enumerate(stamps):
        pub.publish(image_msg(real_frames[i], stamp))
        probe.wait_for(lambda: len(masks) > i and len(toys) > i, 60, f'mask and edges of frame {i}', node)
    assert [stamp_of(m) for m in toys] == stamps
    for mask, toy in zip(masks, toys):
        assert (toy.encoding, toy.height, toy.width) == ('mono8', mask.height, mask.width)
        # what the renderer saw: the published mask is the class ids (no remap here)
        seen = SimpleNamespace(result=SimpleNamespace(class_ids=_ids(mask)))
        np.testing.assert_array_equal(_ids(toy), edges(seen))
    assert overlays == []   # its setting is off: the loop honours every entry's switch
