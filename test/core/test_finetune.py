"""One-shot fine-tuning: which masks are binary object masks (a fresh two-class head) and which are class ids."""
import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, load_checkpoint, save_checkpoint
from vidseg_ros.tools.finetune import one_shot

H, W = 64, 96      # keyframe_fpn needs more than one pixel per channel at 1/32


def _case(tmp_path, classes, mask_values):
    """A tiny checkpoint of ``classes``, a 2-frame sequence and frame 0's mask: square = mask_values[1]."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=len(classes), cached_levels=0)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=classes,
                        palette=[[i, i, i] for i in range(len(classes))], ignore_index=255, input_hw=[H, W])
    ckpt = save_checkpoint(tmp_path / 'm.pt', model, meta)
    rng = np.random.default_rng(0)
    (tmp_path / 'seq').mkdir()
    for t in range(2):
        cv2.imwrite(str(tmp_path / 'seq' / f'{t:05d}.png'), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    mask = np.full((H, W), mask_values[0], np.uint8)
    mask[16:48, 24:72] = mask_values[1]
    cv2.imwrite(str(tmp_path / 'mask.png'), mask)
    return ckpt


def _run(tmp_path, ckpt):
    one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
             steps=1, progress=False)
    classes = load_checkpoint(tmp_path / 'ft' / 'finetuned.pt')[1]['classes']
    written = set(np.unique(cv2.imread(str(tmp_path / 'ft' / '00001.png'), cv2.IMREAD_UNCHANGED)).tolist())
    return classes, written


def test_a_0_1_mask_on_a_multi_class_model_is_class_ids(tmp_path):
    """It was read as a DAVIS object mask: the 3-class head was replaced by background/object, masks x255."""
    ckpt = _case(tmp_path, ['a', 'b', 'c'], (0, 1))
    classes, written = _run(tmp_path, ckpt)
    assert classes == ['a', 'b', 'c'] and written <= {0, 1, 2}


def test_a_0_255_mask_is_an_object_mask_with_a_fresh_two_class_head(tmp_path):
    ckpt = _case(tmp_path, ['a', 'b', 'c'], (0, 255))
    classes, written = _run(tmp_path, ckpt)
    assert classes == ['background', 'object'] and written <= {0, 255}


def test_a_0_1_mask_on_a_two_class_model_is_an_object_mask(tmp_path):
    """Both readings agree on a two-class model: masks are written 0/255 as DAVIS's."""
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    classes, written = _run(tmp_path, ckpt)
    assert classes == ['bg', 'thing'] and written <= {0, 255}


def test_a_mask_with_ids_beyond_the_model_classes_is_a_clear_error(tmp_path):
    ckpt = _case(tmp_path, ['a', 'b', 'c'], (0, 7))
    with pytest.raises(ValueError, match=r"holds \[7\]: neither class ids of the model's 3 classes \(0..2\)"):
        _run(tmp_path, ckpt)
    assert not (tmp_path / 'ft').exists()


@pytest.mark.parametrize('where, match', [
    ('seq', r'is \(inside\) the --sequence folder'),
    ('seq/masks', r'is \(inside\) the --sequence folder'),
    ('.', 'holds the --sequence frames'),
    ('gt', r'is \(inside\) the --labels-dir ground truth'),
    ('gt/deeper', r'is \(inside\) the --labels-dir ground truth'),
    ('labelled', 'holds the --frame / --label files'),
])
def test_an_out_dir_that_would_overwrite_frames_or_ground_truth_is_refused(tmp_path, where, match):
    """--out-dir = --sequence replaced every frame by a mask; = --labels-dir replaced the ground truth by the
    predictions and scored them against themselves (J 1.0), exit 0 both times."""
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    (tmp_path / 'gt').mkdir()
    (tmp_path / 'labelled').mkdir()
    for t in range(2):
        cv2.imwrite(str(tmp_path / 'gt' / f'{t:05d}.png'), np.zeros((H, W), np.uint8))
    (tmp_path / 'mask.png').rename(tmp_path / 'labelled' / 'mask.png')
    before = {p: p.read_bytes() for p in tmp_path.rglob('*.png')}
    with pytest.raises(ValueError, match=match):
        one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'labelled' / 'mask.png', tmp_path / 'seq',
                 tmp_path / where, steps=1, labels_dir=tmp_path / 'gt', progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob('*.png')} == before
    assert not list(tmp_path.rglob('finetuned.pt')) and not (tmp_path / 'seq' / 'masks').exists()


def test_the_same_out_dir_takes_a_second_run(tmp_path):
    """Its own masks and checkpoint are no user data: a rerun into the out dir is no error."""
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    for _ in range(2):
        classes, written = _run(tmp_path, ckpt)
    assert classes == ['bg', 'thing'] and written <= {0, 255}


def test_sequence_frames_numbered_without_padding_are_in_number_order(tmp_path):
    """Plain name order put frame_10 and frame_11 between frame_1 and frame_2 of the sequence."""
    from vidseg_ros.tools.finetune import _frames
    for i in (0, 1, 2, 10, 11):
        cv2.imwrite(str(tmp_path / f'frame_{i}.png'), np.zeros((4, 4, 3), np.uint8))
    assert [p.stem for p in _frames(tmp_path)] == ['frame_0', 'frame_1', 'frame_2', 'frame_10', 'frame_11']


def test_a_full_disk_while_writing_masks_is_an_error_not_empty_masks(tmp_path, monkeypatch):
    """cv2.imwrite's False (or its True over a truncated file) was ignored: exit 0 with 0-byte masks."""
    import contextlib
    import errno

    from support.disk import file_size_limit

    from vidseg_ros.models import checkpoint
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    save = checkpoint.save_checkpoint

    def save_then_fill_the_disk(*args, **kw):      # the checkpoint fits; no mask does (a PNG is >= 67 bytes)
        path = save(*args, **kw)
        limit.enter_context(file_size_limit(50))
        return path

    monkeypatch.setattr(checkpoint, 'save_checkpoint', save_then_fill_the_disk)
    with contextlib.ExitStack() as limit, pytest.raises(OSError) as err:
        one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
                 steps=1, progress=False)
    assert err.value.errno == errno.EFBIG and err.value.filename == str(tmp_path / 'ft' / '00000.png')
    assert sorted(p.name for p in (tmp_path / 'ft').iterdir()) == ['.vidseg.lock', 'finetuned.pt']


def test_a_frame_the_model_gives_nan_on_is_named(tmp_path, monkeypatch):
    """The engine's NonFiniteOutput knows no file: finetune stopped with 'the model output holds NaN or inf on
    this frame' and the user had to guess which of the sequence's frames."""
    from vidseg_ros.engine.base import NonFiniteOutput
    from vidseg_ros.engine.stream import StreamSegmenter
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    step, calls = StreamSegmenter.step, []

    def nan_on_the_2nd(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise NonFiniteOutput('the model output holds NaN or inf on this frame')
        return step(self, *a, **k)
    monkeypatch.setattr(StreamSegmenter, 'step', nan_on_the_2nd)
    with pytest.raises(NonFiniteOutput) as err:
        one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq', tmp_path / 'ft',
                 steps=1, progress=False)
    assert str(err.value) == f'frame {tmp_path / "seq" / "00001.png"}: the model output holds NaN or inf on this frame'


def test_the_cli_names_the_frame_in_one_line_exit_2(tmp_path, monkeypatch):
    """Through the CLI (typer's CliRunner, the console script's ``main``): one line naming the frame, exit 2.
    (A checkpoint that overflows on every frame cannot show it: its one training step turns the weights to NaN,
    and saving finetuned.pt refuses them first.)"""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    from vidseg_ros.engine.base import NonFiniteOutput
    from vidseg_ros.engine.stream import StreamSegmenter
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))

    def nan(self, *a, **k):
        raise NonFiniteOutput('the model output holds NaN or inf on this frame')
    monkeypatch.setattr(StreamSegmenter, 'step', nan)
    r = CliRunner().invoke(app, ['finetune', str(ckpt), '--frame', str(tmp_path / 'seq' / '00000.png'),
                                 '--label', str(tmp_path / 'mask.png'), '--sequence', str(tmp_path / 'seq'),
                                 '--out-dir', str(tmp_path / 'ft'), '--steps', '1'])
    assert r.exit_code == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    line, = r.stderr.strip().splitlines()[-1:]
    first = tmp_path / 'seq' / '00000.png'
    assert line == f'vidseg finetune: error: frame {first}: the model output holds NaN or inf on this frame', line


def test_void_in_a_0_1_ground_truth_is_left_out_of_j_f_and_miou(tmp_path, monkeypatch):
    """--labels-dir ground truth of ids 0/1 with void (255) under a binary fine-tune: `gt > 0` scored the void
    band as object, so a prediction equal to the ground truth everywhere else scored J 0.67, F 0.92, mIoU 0.75."""
    from types import SimpleNamespace

    from vidseg_ros.tools import finetune
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    pred = np.zeros((H, W), np.uint8)
    pred[16:48, 24:72] = 1
    monkeypatch.setattr(finetune, '_step', lambda seg, img: SimpleNamespace(class_ids=pred))
    (tmp_path / 'gt').mkdir()
    gt = pred.copy()
    gt[:8] = 255                 # void: a band the annotator left out, over background
    for t in range(2):
        cv2.imwrite(str(tmp_path / 'gt' / f'{t:05d}.png'), gt)
    result = one_shot(ckpt, tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq',
                      tmp_path / 'ft', steps=1, labels_dir=tmp_path / 'gt', progress=False)
    assert (result['J'], result['F'], result['mIoU']) == (1.0, 1.0, 1.0), result


def test_the_cli_draws_no_progress_bar_where_stderr_is_no_terminal(tmp_path):
    """`vidseg finetune ... 2> log` wrote tqdm's bars into the log (every other command draws them only at a
    terminal). CliRunner's stderr is no terminal, as a log file is not."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    ckpt = _case(tmp_path, ['bg', 'thing'], (0, 1))
    r = CliRunner().invoke(app, ['finetune', str(ckpt), '--frame', str(tmp_path / 'seq' / '00000.png'), '--label',
                                 str(tmp_path / 'mask.png'), '--sequence', str(tmp_path / 'seq'), '--out-dir',
                                 str(tmp_path / 'ft'), '--steps', '2'])
    assert r.exit_code == 0, r.stderr
    assert 'step/s' not in r.stderr and 'finetune:' not in r.stderr, r.stderr
    assert (tmp_path / 'ft' / '00001.png').is_file()
