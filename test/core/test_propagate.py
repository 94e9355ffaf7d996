"""Label propagation on a synthetic moving textured object: flow, tracker, teacher, whole dataset."""
import numpy as np
import pytest

from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.labelling.propagate import (FlowCache, PropagateConfig, _grid, consistent, propagate_flow,
                                       propagate_sequence, teacher_label)
from vidseg_ros.data.labelling.run import propagate_dataset, split_jobs
from vidseg_ros.data.datasets.layouts import read_index
from vidseg_ros.data.labelling.tracking import MedianFlow, mask_box, move_mask, track_masks

H, W = 64, 80


def _video(n=9, speed=2):
    """Textured background; a textured 20x16 block moves right ``speed`` px per frame."""
    rng = np.random.default_rng(0)
    bg = cv_blur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    obj = cv_blur(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)) // 2 + 120
    frames, masks = [], []
    for i in range(n):
        f, m = bg.copy(), np.zeros((H, W), np.uint8)
        x = 10 + speed * i
        f[20:40, x:x + 16] = obj
        m[20:40, x:x + 16] = 1
        frames.append(f)
        masks.append(m)
    return frames, masks


def cv_blur(img):
    import cv2
    return cv2.GaussianBlur(img, (5, 5), 1.5)


def _iou(a, b):
    return ((a == 1) & (b == 1)).sum() / max(((a == 1) | (b == 1)).sum(), 1)


@pytest.mark.parametrize('flow', ['dis', 'farneback'])
def test_flow_propagation_follows_the_object(flow):
    frames, masks = _video()
    out = propagate_flow(frames, {0: masks[0], 8: masks[8]}, 2, PropagateConfig(flow=flow))
    assert sorted(out) == list(range(1, 8))
    for i, p in out.items():
        assert p.source == 'propagated' and p.label.dtype == np.uint8
        # Farneback's wide windows smear a 16-px object on a 64x80 frame more than DIS does.
        assert _iou(p.filled, masks[i]) > (0.8 if flow == 'dis' else 0.7), (i, _iou(p.filled, masks[i]))
        assert set(np.unique(p.label)) <= {0, 1, 255}


def test_one_sided_propagation_is_bounded():
    frames, masks = _video()
    out = propagate_flow(frames, {2: masks[2]}, 2, PropagateConfig(max_distance=3))
    assert sorted(out) == [0, 1, 3, 4, 5]


def test_consistency_flags_disagreeing_flow():
    grid = _grid((8, 8))
    f = np.zeros((8, 8, 2), np.float32)
    f[..., 0] = 1.0
    assert consistent(f, -f, grid)[:, :7].all()
    assert not consistent(f, f, grid)[:, :7].any()


def test_flow_cache_reuses_flows():
    frames, masks = _video(n=5)
    cache = FlowCache(frames, PropagateConfig())
    a = propagate_flow(frames, {0: masks[0], 4: masks[4]}, 2, cache=cache)
    n = len(cache._flow)
    b = propagate_flow(frames, {0: masks[0], 4: masks[4]}, 2, cache=cache)
    assert len(cache._flow) == n and np.array_equal(a[2].label, b[2].label)


def test_tracker_moves_the_mask():
    frames, masks = _video()
    t = MedianFlow()
    t.init(frames[0], mask_box(masks[0]))
    ok, box = t.update(frames[1])
    assert ok and abs(box[0] - 12) < 1.0
    moved = move_mask(masks[0], mask_box(masks[0]), (14, 20, 16, 20))
    assert np.array_equal(moved, masks[2])
    out = track_masks(frames, {0: masks[0], 8: masks[8]})
    assert sorted(out) == list(range(1, 8))
    assert all(_iou(out[i], masks[i]) > 0.8 for i in out)
    mil = propagate_sequence(frames, {0: masks[0]}, 2, PropagateConfig(method='tracker', tracker='mil',
                                                                       max_distance=2))
    assert sorted(mil) == [1, 2]


def test_teacher_threshold():
    frames, masks = _video(n=2)

    def predict(rgb):
        conf = np.full(rgb.shape[:2], 0.9, np.float32)
        conf[:, :10] = 0.3
        return masks[0], conf

    p = teacher_label(frames[0], predict, 0.7)
    assert p.source == 'teacher' and (p.label[:, :10] == 255).all() and np.array_equal(p.filled, masks[0])
    with pytest.raises(ValueError, match='model'):
        propagate_sequence(frames, {}, 2, PropagateConfig(method='teacher'))
    with pytest.raises(ValueError, match='binary'):
        propagate_sequence(frames, {0: masks[0]}, 5, PropagateConfig(method='tracker'))


def _teacher(masks, classes=None, shift=0):
    """A stand-in model: the true mask (+ ``shift``) at full confidence; ``classes`` as the engine's."""
    def predict(rgb):
        return masks[0] + shift, np.ones(rgb.shape[:2], np.float32)
    if classes is not None:
        predict.classes = classes
    return predict


@pytest.mark.parametrize('classes, shift, match', [
    (['Sky', 'Building', 'Road'], 0, r'teacher model has 3 classes \(Sky, Building, Road\), the dataset 2 '
                                     r'\(bg, obj\)'),
    (['obj', 'bg'], 0, 'teacher model has 2 classes'),        # same count, other order
    (None, 5, 'the teacher predicted class id 6 but the dataset has 2 classes'),   # a model that says nothing
])
def test_a_teacher_for_other_classes_is_refused_and_writes_nothing(tmp_path, classes, shift, match):
    """A CamVid teacher wrote its ids (1..8) into a 3-class dataset, exit 0."""
    frames, masks = _video(n=4)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0,))
    before = (ds / 'index.csv').read_bytes()
    with pytest.raises(ValueError, match=match):
        propagate_dataset(ds, PropagateConfig(method='teacher'), _teacher(masks, classes, shift))
    assert (ds / 'index.csv').read_bytes() == before


@pytest.mark.parametrize('theirs, refused', [(['Sky', ' ROAD'], False), (['sky', 'car'], True)])
def test_a_teacher_is_checked_by_the_rule_training_uses(tmp_path, theirs, refused):
    """'Sky' for the dataset's 'sky' is the same class here and in a training run (same_class_names)."""
    from vidseg_ros.data.datasets.labels import same_class_names
    frames, masks = _video(n=3)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0,), class_names=('sky', 'road'))
    assert same_class_names(theirs, ['sky', 'road']) is not refused
    if refused:
        with pytest.raises(ValueError, match=r'teacher model has 2 classes \(sky, car\), the dataset 2 '
                                             r'\(sky, road\)'):
            propagate_dataset(ds, PropagateConfig(method='teacher'), _teacher(masks, theirs))
    else:
        assert propagate_dataset(ds, PropagateConfig(method='teacher'), _teacher(masks, theirs))['teacher'] == 2


def test_a_teacher_for_the_dataset_classes_labels_every_frame(tmp_path):
    frames, masks = _video(n=4)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0,))
    counts = propagate_dataset(ds, PropagateConfig(method='teacher'), _teacher(masks, [' BG', 'Obj']))
    assert counts['teacher'] == 3 and counts['total_human'] == 1


def test_split_jobs_cover_every_frame_once():
    assert split_jobs(30, [0, 5, 10, 15, 20, 25], labels_per_job=2) == [(0, 10), (10, 20), (20, 29)]
    assert split_jobs(12, [3, 8]) == [(0, 11)]
    assert split_jobs(5, []) == [(0, 4)]


def _labelled_dataset(tmp_path, name, frames, masks, keep, class_names=('bg', 'obj')):
    write_bag(tmp_path / f'{name}_bag', [frames])
    extract([tmp_path / f'{name}_bag'], tmp_path / name)
    recs = read_index(tmp_path / name)
    for i in keep:
        write_label(tmp_path / f'{name}_lab' / f'{recs[i].stamp_ns}.png', masks[i])
    import_labels(tmp_path / name, tmp_path / f'{name}_lab', class_names=list(class_names))
    return tmp_path / name


def test_propagate_dataset_records_sources(tmp_path):
    frames, masks = _video(n=6)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0, 5))
    counts = propagate_dataset(ds, PropagateConfig())
    assert counts['propagated'] == 4 and counts['total_human'] == 2
    after = read_index(ds)
    assert [r.label_source for r in after] == ['human'] + ['propagated'] * 4 + ['human']
    again = propagate_dataset(ds, PropagateConfig())
    assert 'propagated' not in again           # nothing redone without overwrite


def test_propagate_dataset_workers_match_serial(tmp_path):
    import cv2
    frames, masks = _video(n=9)
    keep = (0, 2, 4, 6, 8)
    one = _labelled_dataset(tmp_path, 'one', frames, masks, keep)
    two = _labelled_dataset(tmp_path, 'two', frames, masks, keep)
    propagate_dataset(one, PropagateConfig())
    propagate_dataset(two, PropagateConfig(), workers=2)
    for a, b in zip(read_index(one), read_index(two)):
        assert a.label_source == b.label_source
        assert np.array_equal(cv2.imread(str(a.label), 0), cv2.imread(str(b.label), 0))


def test_many_classes_use_chunked_warps():
    frames, masks = _video()
    labels = {k: (masks[k] * 5).astype(np.uint8) for k in (0, 8)}     # object = class 5 of 6
    labels[0][:4] = 255                                                 # unknown rows in one label
    out = propagate_flow(frames, labels, 6, PropagateConfig())
    assert all(_iou((out[i].filled == 5).astype(np.uint8), masks[i]) > 0.8 for i in out)
    assert all(set(np.unique(p.label)) <= {0, 5, 255} for p in out.values())


def test_dataset_ignore_index_is_honoured(tmp_path):
    """A CamVid-style dataset (11 classes, void = 11) propagates with 11 as ignore, not 255."""
    frames, masks = _video(n=6)
    labels = [(m * 3).astype(np.uint8) for m in masks]            # object = class 3
    for lab in labels:
        lab[:3] = 11                                              # void rows
    write_bag(tmp_path / 'bag', [frames])
    extract([tmp_path / 'bag'], tmp_path / 'ds')
    recs = read_index(tmp_path / 'ds')
    for i in (0, 5):
        write_label(tmp_path / 'lab' / f'{recs[i].stamp_ns}.png', labels[i])
    import_labels(tmp_path / 'ds', tmp_path / 'lab', class_names=[f'c{i}' for i in range(11)], ignore_index=11)
    done = []
    counts = propagate_dataset(tmp_path / 'ds', PropagateConfig(), progress=done.append)
    assert counts['propagated'] == 4 and counts['ignored_percent'] > 0       # the void rows at least
    import cv2
    for r in read_index(tmp_path / 'ds'):
        values = set(np.unique(cv2.imread(str(r.label), cv2.IMREAD_UNCHANGED)).tolist())
        assert values <= {0, 3, 11}, values
    assert sum(done) == len(recs)


def test_progress_adds_up_to_the_frames(tmp_path):
    frames, masks = _video(n=30, speed=1)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, range(0, 30, 3))     # 4 jobs sharing boundaries
    done = []
    propagate_dataset(ds, PropagateConfig(max_distance=3), progress=done.append)
    assert len(done) > 1 and sum(done) == 30


def test_a_label_value_outside_the_classes_is_a_clear_error():
    frames, masks = _video(n=4)
    with pytest.raises(ValueError, match='neither a class id'):
        propagate_flow(frames, {0: (masks[0] * 7).astype(np.uint8), 3: masks[3]}, 2, PropagateConfig())


def test_the_cli_teacher_is_checked_against_the_dataset_classes(tmp_path):
    """`vidseg propagate --method teacher --model M` hands the model's class names to the check."""
    import torch
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    from vidseg_ros.tools.commands_data import propagate
    frames, masks = _video(n=4)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0,))
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=3, width_mult=0.25, cached_levels=0)
    ckpt = save_checkpoint(tmp_path / 'm.pt', model, default_meta(
        'keyframe_fpn', model.arch_config, classes=['Sky', 'Building', 'Road'],
        palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], input_hw=[64, 64], provenance={'trained': True}))
    before = (ds / 'index.csv').read_bytes()
    with pytest.raises(ValueError, match=r'teacher model has 3 classes \(Sky, Building, Road\)'):
        propagate(ds, method='teacher', model=str(ckpt), progress=False)
    assert (ds / 'index.csv').read_bytes() == before


def _mixed_size_dataset(tmp_path, human):
    """A sequence whose frames change size half-way (as a dataset made by hand may): 4 frames of 64x80,
    then 4 of the same video at 48x60, with human labels at ``human``."""
    import cv2
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    frames, masks = _video(n=8)
    root = tmp_path / 'ds'
    recs = []
    for i, (f, m) in enumerate(zip(frames, masks)):
        if i >= 4:
            f, m = cv2.resize(f, (60, 48), interpolation=cv2.INTER_AREA), cv2.resize(m, (60, 48), 0, 0,
                                                                                     cv2.INTER_NEAREST)
        image = root / 'images' / 'seq' / f'{i}.png'
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), f[..., ::-1])
        label = write_label(root / 'labels' / 'seq' / f'{i}.png', m) if i in human else None
        recs.append(FrameRecord('seq', i, image, label, 1000 + i, 'human' if i in human else 'none'))
    write_index(root, recs)
    write_meta(root, {'classes': ['bg', 'obj'], 'ignore_index': 255})
    return root, masks


def test_a_sequence_that_changes_frame_size_is_propagated_in_parts(tmp_path, caplog):
    """Flow between frames of two sizes stopped `vidseg propagate` inside OpenCV (dis_flow.cpp,
    I0.sameSize(I1)); each same-size part now propagates from its own human labels."""
    import cv2
    root, masks = _mixed_size_dataset(tmp_path, (0, 7))
    done = []
    with caplog.at_level('WARNING'):
        counts = propagate_dataset(root, PropagateConfig(), progress=done.append)
    assert counts['propagated'] == 6 and sum(done) == 8
    assert 'changes frame size at' in caplog.text and '4.png (index 4, 80x64 -> 60x48)' in caplog.text
    for r in read_index(root):
        assert cv2.imread(str(r.label), 0).shape == cv2.imread(str(r.image)).shape[:2]
        if r.label_source == 'propagated' and r.index < 4:
            assert _iou(cv2.imread(str(r.label), 0), masks[r.index]) > 0.6


def test_a_part_of_another_size_without_a_human_label_is_left_with_a_warning(tmp_path, caplog):
    root, _ = _mixed_size_dataset(tmp_path, (0, 2))
    done = []
    with caplog.at_level('WARNING'):
        counts = propagate_dataset(root, PropagateConfig(), progress=done.append)
    assert counts['propagated'] == 2 and sum(done) == 8
    assert 'the 4 frame(s) of 60x48 from' in caplog.text and 'have no human label of their size' in caplog.text
    assert [r.label_source for r in read_index(root)][4:] == ['none'] * 4


def test_flow_and_tracker_refuse_frames_of_two_sizes():
    frames, masks = _video(n=6)
    frames[4] = frames[4][:60]
    with pytest.raises(ValueError, match='frame 4 is 80x60, frame 0 80x64'):
        propagate_flow(frames, {0: masks[0], 5: masks[5][:60]}, 2, PropagateConfig())
    with pytest.raises(ValueError, match='frame 4 is 80x60, labelled frame 0 80x64'):
        track_masks(frames, {0: masks[0]}, max_distance=5)


def test_a_teacher_that_gives_nan_names_the_frame(tmp_path):
    """The engine's NonFiniteOutput knows no file: propagate --method teacher stopped with 'the model output holds
    NaN or inf on this frame' and the user had to guess which of the dataset's frames."""
    from vidseg_ros.engine.base import NonFiniteOutput
    frames, masks = _video(n=4)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0,))
    good, calls = _teacher(masks, ['bg', 'obj']), []

    def nan_on_the_2nd(rgb):
        calls.append(1)
        if len(calls) == 2:
            raise NonFiniteOutput('the model output holds NaN or inf on this frame')
        return good(rgb)
    nan_on_the_2nd.classes = ['bg', 'obj']
    with pytest.raises(NonFiniteOutput) as err:
        propagate_dataset(ds, PropagateConfig(method='teacher'), nan_on_the_2nd)
    bad = read_index(ds)[2].image       # frame 0 is human-labelled: the teacher's 2nd frame is frame 2
    assert str(err.value) == f'frame {bad}: the model output holds NaN or inf on this frame'


def test_the_cli_teacher_whose_output_overflows_names_the_frame_in_one_line_exit_2(tmp_path):
    import subprocess
    import sys
    import torch
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    frames, masks = _video(n=3)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0,))
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, width_mult=0.25, cached_levels=0)
    with torch.no_grad():       # finite BatchNorm biases of 3e38: the next layer's sums overflow on any frame
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(3e38)
    ckpt = save_checkpoint(tmp_path / 'huge.pt', model, default_meta(
        'keyframe_fpn', model.arch_config, classes=['bg', 'obj'], palette=[[0, 0, 0], [1, 1, 1]], input_hw=[64, 64],
        provenance={'trained': True}))
    proc = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'propagate', str(ds), '--method', 'teacher',
                           '--model', str(ckpt)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    first = read_index(ds)[1].image
    assert last.startswith(f'vidseg propagate: error: frame {first}: the model output holds NaN or inf'), last
    assert 'Traceback' not in proc.stderr


def test_a_second_method_over_propagated_labels_says_it_kept_them(tmp_path, caplog):
    """docs/data.md's walk runs flow, then `--method tracker --out DIR`: the tracker run wrote no label (every
    frame already carried flow's, kept without --overwrite) and said nothing, exit 0: the new dataset held the
    flow labels under the tracker's name. The summary counts them (kept_existing) and a warning says how to redo."""
    frames, masks = _video(n=5)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, (0, 4))
    assert propagate_dataset(ds, PropagateConfig())['propagated'] == 3
    counts = propagate_dataset(ds, PropagateConfig(method='tracker'), out=tmp_path / 'tracker')
    assert counts['kept_existing'] == 3 and 'propagated' not in counts
    assert 'nothing propagated: the 3 frame(s) it labels already carry a propagated or teacher label' in caplog.text
    assert '--overwrite redoes them' in caplog.text
    redo = propagate_dataset(ds, PropagateConfig(method='tracker'), overwrite=True, out=tmp_path / 'tracker2')
    assert redo['propagated'] == 3 and 'kept_existing' not in redo


def test_a_run_over_labels_kept_from_an_earlier_run_computes_nothing(tmp_path, monkeypatch):
    """A second run without --overwrite (a resume, or another method) over frames that all carry labels computed
    every flow again only to keep each label (the first run's full cost for nothing). Jobs whose frames are all
    labelled are now skipped, counted as kept, and the progress still adds up."""
    from vidseg_ros.data.labelling import run
    frames, masks = _video(n=30, speed=1)
    ds = _labelled_dataset(tmp_path, 'ds', frames, masks, range(0, 30, 3))     # 4 jobs
    assert propagate_dataset(ds, PropagateConfig(max_distance=3))['propagated'] == 20
    calls = []
    monkeypatch.setattr(run, 'propagate_sequence', lambda *a, **k: calls.append(1) or {})
    done = []
    counts = propagate_dataset(ds, PropagateConfig(max_distance=3), progress=done.append)
    assert calls == [] and counts['kept_existing'] == 20 and 'propagated' not in counts
    assert sum(done) == 30
    # a frame without a label makes its job run again (only that one)
    recs = read_index(ds)
    from dataclasses import replace
    from vidseg_ros.data.datasets.layouts import write_index
    write_index(ds, [replace(r, label=None, label_source='none') if i == 4 else r for i, r in enumerate(recs)])
    propagate_dataset(ds, PropagateConfig(max_distance=3))
    assert len(calls) == 1


def _leaving(n: int = 30):
    """A textured square moving 5 px a frame to the right out of a 96-wide frame (gone from frame 18 on)."""
    rng = np.random.default_rng(0)
    bg, tex = rng.integers(0, 120, (64, 96, 3), dtype=np.uint8), rng.integers(150, 255, (20, 20, 3), dtype=np.uint8)
    frames, masks = [], []
    for t in range(n):
        img, mask, x = bg.copy(), np.zeros((64, 96), np.uint8), 10 + 5 * t
        img[20:40, x:x + 20] = tex[:, :max(0, min(20, 96 - x))]
        mask[20:40, x:x + 20] = 1
        frames.append(img)
        masks.append(mask)
    return frames, masks


def test_a_tracked_object_that_leaves_the_frame_is_not_labelled_where_it_was_last_seen():
    """After the median-flow tracker lost the object (here: it left the frame), each later frame was labelled with
    the mask at the last box, confidence 1: 120 pixels of object on empty background, 12 frames long. From the
    loss on the label is ignore (confidence 0 < min_confidence); --min-confidence 0 keeps the filled mask, as flow
    does. (OpenCV's MIL tracker reports no loss here: its box stays at the frame's edge.)"""
    tracker = 'medianflow'
    frames, masks = _leaving()
    out = propagate_sequence(frames, {0: masks[0]}, 2, PropagateConfig(method='tracker', tracker=tracker))
    assert sorted(out) == list(range(1, 30))
    lost = [i for i in out if out[i].confidence.max() == 0]
    assert lost and lost == list(range(lost[0], 30)) and lost[0] <= 19      # lost for good, by frame 19
    for i in out:
        if i in lost:
            assert (out[i].label == 255).all()
        else:
            assert np.array_equal(out[i].label, out[i].filled) and _iou(out[i].label, masks[i]) > 0.5
    assert not any((out[i].label == 1).any() and not masks[i].any() for i in out)     # no object where none is
    filled = propagate_sequence(frames, {0: masks[0]}, 2, PropagateConfig(method='tracker', tracker=tracker,
                                                                          min_confidence=0))
    assert all(np.array_equal(filled[i].label, out[i].filled) for i in out)
