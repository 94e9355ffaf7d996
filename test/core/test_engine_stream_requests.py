"""StreamSegmenter.step's request checks at their edges: the smallest sizes and the first and last class are
served, with every output at the size asked for."""
import numpy as np
import pytest
import torch

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta


@pytest.fixture(scope='module')
def eng():
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', width_mult=0.25)
    return StreamSegmenter(model, default_meta('keyframe_fpn', model.arch_config),
                           EngineConfig(device='cpu', input_hw=[32, 32]))


@pytest.mark.parametrize('image_hw, output_hw, class_prob', [
    ((1, 1), None, 0),          # a one-pixel frame, the first class
    ((40, 30), (1, 1), 10),     # a one-pixel output, the last class (of 11)
    ((40, 30), (1, 57), 0),
    ((40, 30), [23, 1], 10),    # a list, as ROS parameters give it
])
def test_the_smallest_sizes_and_the_first_and_last_class_are_served(eng, image_hw, output_hw, class_prob):
    img = np.random.default_rng(0).integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    r = eng.step(img, want_confidence=True, class_prob=class_prob, output_hw=output_hw)
    want = tuple(output_hw or image_hw)
    assert r.class_ids.shape == r.confidence.shape == r.class_prob.shape == want
    assert (r.class_prob <= r.confidence + 1e-6).all() and r.class_ids.max() < 11


@pytest.mark.parametrize('output_hw', [(5, 6, 7), (5,), (0, 9)])
def test_an_output_size_of_other_than_two_positive_sizes_is_refused(eng, output_hw):
    with pytest.raises(ValueError, match='output_hw'):
        eng.step(np.zeros((8, 8, 3), np.uint8), output_hw=output_hw)
