"""`vidseg propagate --method teacher --model M`, run to its end: each frame without a human label gets the model's
own prediction (confidence under the threshold: ignore), computed here from the engine directly."""
import cv2
import numpy as np
import torch

from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import read_index
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.tools.commands_data import propagate


def test_the_teacher_labels_each_unlabelled_frame_with_the_models_prediction(tmp_path):
    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (5, 5), 1.5) for _ in range(4)]
    frames = [np.ascontiguousarray(f[:, :, ::-1]) if i % 2 else f for i, f in enumerate(frames)]
    write_bag(tmp_path / 'bag', [frames])
    extract([tmp_path / 'bag'], tmp_path / 'ds')
    recs = read_index(tmp_path / 'ds')
    human = np.zeros((48, 64), np.uint8)
    human[10:30, 20:40] = 1
    write_label(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png', human)
    import_labels(tmp_path / 'ds', tmp_path / 'lab', class_names=['bg', 'obj'])
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, width_mult=0.25, cached_levels=0)
    ckpt = save_checkpoint(tmp_path / 'm.pt', model, default_meta(
        'keyframe_fpn', model.arch_config, classes=['bg', 'obj'], palette=[[0, 0, 0], [255, 0, 0]],
        input_hw=[48, 64], provenance={'trained': True}))
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(ckpt), device='cpu', keyframe_interval=1))
    confidences = []
    for rec in recs[1:]:
        res = engine.step(cv2.cvtColor(cv2.imread(str(rec.image)), cv2.COLOR_BGR2RGB), None, want_confidence=True)
        confidences.append(res.confidence)
    threshold = float(np.median(np.concatenate([c.ravel() for c in confidences])))     # some pixels each way

    counts = propagate(tmp_path / 'ds', method='teacher', model=str(ckpt), progress=False,
                       teacher_threshold=threshold)
    after = read_index(tmp_path / 'ds')
    assert [r.label_source for r in after] == ['human', 'teacher', 'teacher', 'teacher'], counts
    assert cv2.imread(str(after[0].label), cv2.IMREAD_UNCHANGED).tolist() == human.tolist()
    for rec in after[1:]:
        engine.reset('test')
        res = engine.step(cv2.cvtColor(cv2.imread(str(rec.image)), cv2.COLOR_BGR2RGB), None, want_confidence=True)
        want = np.where(res.confidence >= threshold, res.class_ids, 255)
        got = cv2.imread(str(rec.label), cv2.IMREAD_UNCHANGED)
        assert got.shape == want.shape and (got == want).mean() > 0.999, (got == want).mean()
        assert 0 < (got == 255).mean() < 1
