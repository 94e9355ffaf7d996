"""`vidseg eval` on a split whose frames are labelled only in part (human labels on some frames, before
`vidseg propagate`): it stopped with 'internal error, please report it: AttributeError: 'NoneType' object has no
attribute 'shape'' (the label size check read every frame's label); the labelled frames are scored, TC over every
pair, and no mVC window (it needs 8 consecutive labelled frames)."""
import cv2
import numpy as np
import torch

from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.tools.evaluate import run_evaluation

H, W = 48, 64


def _model(path):
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, cached_levels=0, fpn_ch=16)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=['bg', 'obj'], palette=[[0, 0, 0], [9, 9, 9]],
                        ignore_index=255, input_hw=[64, 64])
    return save_checkpoint(path, model, meta)


def _data(root, labelled, n=10):
    """One sequence of ``n`` frames at 10 Hz (a block moving right), a label on the frames in ``labelled``."""
    (root / 'images' / 's').mkdir(parents=True)
    (root / 'labels' / 's').mkdir(parents=True)
    recs = []
    for i in range(n):
        mask = np.zeros((H, W), np.uint8)
        mask[10:30, 4 + 3 * i:24 + 3 * i] = 1
        image, label = root / 'images' / 's' / f'{i}.png', root / 'labels' / 's' / f'{i}.png'
        cv2.imwrite(str(image), np.where(mask[..., None] > 0, 220, 30).astype(np.uint8).repeat(3, 2))
        if i in labelled:
            cv2.imwrite(str(label), mask)
        recs.append(FrameRecord('s', i, image, label if i in labelled else None, i * 100_000_000,
                                'human' if i in labelled else ''))
    write_index(root, recs)
    write_meta(root, {'classes': ['bg', 'obj'], 'ignore_index': 255})
    return root


def test_eval_of_a_split_labelled_in_part(tmp_path):
    report = run_evaluation(_model(tmp_path / 'm.pt'), _data(tmp_path / 'd', {0, 4, 9}), split='all',
                            out_dir=tmp_path / 'ev', write_card=False)
    r = report['intervals']['1']
    assert r['frames'] == 10 and r['all']['pixels'] == 3 * H * W and 0 <= r['mIoU'] <= 1
    assert r['TC_pairs'] == 9 and r['mVC8_windows'] == 0 and 'mVC8' not in r
