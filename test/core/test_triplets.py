"""Key-frame triplets from real video: ``distance_mode: constant`` takes the frame exactly ``max_distance``
before the labelled one (synthetic motion only where that frame does not exist), and the teacher labels the
key frames that have no label of their own, and only those."""
import numpy as np
import torch
from torch.utils.data import DataLoader

from support.eval_data import folder_dataset
from support.tiny_models import TinyKeyframe

from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.training import data_setup
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.model_setup import load_teacher
from vidseg_ros.training.steps import Batch, StepRunner

UNLABELLED = (1, 2)


def _drive(root):
    """Eight 64x64 frames, frame i all grey 20 * i (so a sample says which frame it shows); every frame but
    1 and 2 labelled, with class i % 2."""
    images = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(8)]
    labels = [None if i in UNLABELLED else np.full((64, 64), i % 2, np.uint8) for i in range(8)]
    return folder_dataset(root, images, labels)


def _cfg(root, **kw) -> TrainConfig:
    return TrainConfig(mode='keyframe', dataset='folder', data_root=str(root), train_split='all', val_split='',
                       num_classes=2, ignore_index=255, input_hw=[64, 64], hflip=False, scale_range=[1.0, 1.0],
                       jitter=0.0, max_distance=3, distance_mode='constant', amp=False, **kw)


def _frame(image: torch.Tensor) -> int:
    return round(float(image.mean()) * 255 / 20)


def test_constant_distance_takes_the_real_frame_that_far_back(tmp_path):
    ds = data_setup.train_dataset(_cfg(_drive(tmp_path / 'd')))
    samples = [ds[i] for i in range(len(ds))]
    assert [_frame(s['current']) for s in samples] == [0, 3, 4, 5, 6, 7]   # the labelled frames
    assert all(s['distance'] == 3 for s in samples)
    for s in samples[1:]:                  # frame 3 on: the real frame 3 back, with its own label (or none)
        cur = _frame(s['current'])
        key = cur - 3
        assert _frame(s['key']) == key and not s['synthetic']
        want = 255 if key in UNLABELLED else key % 2
        assert s['key_label'].unique().tolist() == [want]
        assert s['label'].unique().tolist() == [cur % 2]
    first = samples[0]     # frame 0 has nothing 3 back: its own image and label, moved
    assert first['synthetic'] and _frame(first['key']) == 0 and 0 in first['key_label'].unique().tolist()


def test_the_teacher_labels_only_key_frames_without_a_label(tmp_path):
    root = _drive(tmp_path / 'd')
    teacher = create_model('keyframe_fpn', num_classes=2, cached_levels=0, fpn_ch=16)
    with torch.no_grad():    # a teacher that says 'obj' (1) everywhere
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.copy_(torch.tensor([-10.0, 10.0]))
    path = save_checkpoint(tmp_path / 'teacher.pt', teacher,
                           default_meta('keyframe_fpn', teacher.arch_config, classes=['bg', 'obj'], ignore_index=255))
    cfg = _cfg(root, teacher=str(path))
    info = data_setup.dataset_info(cfg)
    assert [a['path'] for a in info['also']] == [str(path)]            # recorded among the run's sources
    ds = data_setup.train_dataset(cfg)
    raw = next(iter(DataLoader(ds, batch_size=len(ds))))
    runner = StepRunner(cfg, TinyKeyframe(2), torch.device('cpu'), teacher=load_teacher(cfg, info, torch.device('cpu')))
    given = raw['key_label'].clone()
    targets = runner._key_targets(Batch(raw))
    for i, cur in enumerate(_frame(c) for c in raw['current']):
        if cur - 3 in UNLABELLED:                                           # keys 1 and 2: the teacher's class
            assert (targets[i] == 1).all()
        else:                                                               # a human label (or the moved one) stays
            assert torch.equal(targets[i], given[i])
    assert torch.equal(raw['key_label'], given)                             # the batch itself is not changed
