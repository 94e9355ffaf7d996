"""`vidseg eval` on a split whose frames are labelled only in part (human labels on some frames, before
`vidseg propagate`): it stopped with 'internal error, please report it: AttributeError: 'NoneType' object has no
attribute 'shape'' (the label size check read every frame's label); the labelled frames are scored, TC over every
pair, and no mVC window (it needs 8 consecutive labelled frames)."""
import numpy as np

from support.eval_data import folder_dataset, tiny_fpn
from vidseg_ros.tools.evaluate import run_evaluation

H, W = 48, 64


def _model(path):
    return tiny_fpn(path)


def _data(root, labelled, n=10):
    """One sequence of ``n`` frames at 10 Hz (a block moving right), a label on the frames in ``labelled``."""
    masks = []
    for i in range(n):
        mask = np.zeros((H, W), np.uint8)
        mask[10:30, 4 + 3 * i:24 + 3 * i] = 1
        masks.append(mask)
    images = [np.where(m[..., None] > 0, 220, 30).astype(np.uint8).repeat(3, 2) for m in masks]
    return folder_dataset(root, images, [m if i in labelled else None for i, m in enumerate(masks)])


def test_eval_of_a_split_labelled_in_part(tmp_path):
    report = run_evaluation(_model(tmp_path / 'm.pt'), _data(tmp_path / 'd', {0, 4, 9}), split='all',
                            out_dir=tmp_path / 'ev', write_card=False)
    r = report['intervals']['1']
    assert r['frames'] == 10 and r['all']['pixels'] == 3 * H * W and 0 <= r['mIoU'] <= 1
    assert r['TC_pairs'] == 9 and r['mVC8_windows'] == 0 and 'mVC8' not in r


def test_max_frames_that_leave_no_label_say_so(tmp_path, caplog):
    """Labels from frame 4 on and --max-frames 3: with the data's class names the run scored no label without a
    word; without them it said 'the data has no labels', which was not so."""
    model = _model(tmp_path / 'm.pt')
    data = _data(tmp_path / 'd', {4, 9})
    report = run_evaluation(model, data, split='all', max_frames=3, out_dir=tmp_path / 'ev', write_card=False)
    r = report['intervals']['1']
    assert r['frames'] == 3 and 'mIoU' not in r and r['TC_pairs'] == 2
    said = [rec.getMessage() for rec in caplog.records if rec.levelname == 'WARNING']
    assert any('no labelled frame' in m and '--max-frames' in m for m in said), said
