"""`vidseg eval` at its boundaries: frame sizes the flow resizing rounds to nothing, the first and last frame of a
sequence, sequences of one frame, and the aggregation of scores over sequences and classes."""
from __future__ import annotations

import numpy as np

from support.eval_data import folder_dataset, noise_images, tiny_fpn
from vidseg_ros.tools.evaluate import run_evaluation


def test_a_one_pixel_high_wide_frame_is_scored(tmp_path):
    """1x1000 frames (a line-scan camera): scaled to the flow's 480 px they rounded to 0 rows, and OpenCV's resize
    stopped the run with '(-215:Assertion failed) inv_scale_x > 0' after the model had run."""
    label = (np.arange(1000)[None, :] % 2).astype(np.uint8)
    data = folder_dataset(tmp_path / 'd', noise_images([label] * 3), [label] * 3)
    report = run_evaluation(tiny_fpn(tmp_path / 'm.pt'), data, split='all', out_dir=tmp_path / 'ev', write_card=False)
    scores = report['intervals']['1']
    assert scores['TC_pairs'] == 2 and 0 <= scores['TC'] <= 1
    assert scores['all']['pixels'] == 3000
