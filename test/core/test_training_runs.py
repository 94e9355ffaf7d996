"""What a training run may write: its own folder (never another run's, never two at once) and an output
file it wrote itself; what it refuses before training (a damaged last.pt, a teacher of other classes)."""
import fcntl
from pathlib import Path

import numpy as np
import pytest
import torch

from support.tiny_models import TinyKeyframe, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.loop import train
from vidseg_ros.training.run_outputs import LOCK_NAME

HW = (64, 64)


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW), batch_size=2,
                epochs=1, val_split='', hflip=False, runs_dir=str(tmp_path / 'runs'))
    base.update(kw)
    return TrainConfig(**base)


def _train(cfg, **kw):
    return train(cfg, model=TinyKeyframe(), train_set=frames(4, HW), **kw)


def _user_model(path: Path) -> Path:
    model = create_model('keyframe_fpn', num_classes=3, fpn_ch=32)
    return save_checkpoint(path, model, default_meta('keyframe_fpn', model.arch_config, classes=['a', 'b', 'c']))


def test_a_second_run_of_the_same_name_is_refused_and_the_first_can_still_be_resumed(tmp_path):
    """It replaced last.pt (epoch 2 -> epoch 1) and best.pt, exit 0: the first run could not be resumed."""
    _train(_cfg(tmp_path, epochs=2))
    last = tmp_path / 'runs' / 't' / 'last.pt'
    before = last.read_bytes()
    with pytest.raises(ConfigError, match=r'already holds a training run \(last.pt, best.pt\); --resume to '
                                          r'continue it, or another name \(--set name=...\), or --overwrite'):
        _train(_cfg(tmp_path, seed=7))
    assert last.read_bytes() == before
    assert _train(_cfg(tmp_path, epochs=3), resume=True)['epochs'] == 3
    assert _train(_cfg(tmp_path, seed=7), overwrite=True)['epochs'] == 1


def test_an_output_not_written_by_this_run_is_kept_unless_overwrite(tmp_path):
    """The user's trained model at `output` was replaced by any run's first epoch (lr 0 here), exit 0."""
    user = _user_model(tmp_path / 'user.pt')
    before = user.read_bytes()
    with pytest.raises(ConfigError, match=r'output: .*user.pt exists and was not written by this run .*; '
                                          r'--overwrite to replace it \(e.g. retraining a shipped model'):
        _train(_cfg(tmp_path, output=str(user), lr=0.0))
    assert user.read_bytes() == before and not (tmp_path / 'runs').exists()   # no empty run folder left
    mine = tmp_path / 'mine.pt'
    _train(_cfg(tmp_path, output=str(mine)))
    _train(_cfg(tmp_path, output=str(mine), epochs=2), resume=True)       # its own output: replaced
    with pytest.raises(ConfigError, match='was not written by this run'):   # another run's output
        _train(_cfg(tmp_path, name='other', output=str(mine)))
    _train(_cfg(tmp_path, name='other', output=str(user)), overwrite=True)
    assert user.read_bytes() != before


def test_an_output_that_is_a_folder_is_refused_before_training(tmp_path):
    """It failed after training ('outdir.tmp: Is a directory'), leaving a 14 MB outdir.tmp and no last.pt."""
    (tmp_path / 'outdir').mkdir()
    with pytest.raises(ConfigError, match=r'output: .*outdir is a folder; name the model file'):
        _train(_cfg(tmp_path, output=str(tmp_path / 'outdir')))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['outdir']


def test_a_run_folder_in_use_by_another_training_is_refused(tmp_path):
    """Two trainings into one folder raced: one died at epoch 4 ('last.tmp: No such file or directory')."""
    run_dir = tmp_path / 'runs' / 't'
    run_dir.mkdir(parents=True)
    with open(run_dir / LOCK_NAME, 'w') as other:
        other.write('4242\n')
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match=r'run folder in use by another training \(PID 4242\)'):
            _train(_cfg(tmp_path))
    assert _train(_cfg(tmp_path))['epochs'] == 1     # released: the next training goes ahead


def _state_of_another_arch(tmp_path) -> bytes:
    from vidseg_ros.models import create_model
    cfg = _cfg(tmp_path, name='unet', arch='recurrent_unet', arch_config={'size': 'small_shallow'})
    train(cfg, model=create_model('recurrent_unet', num_classes=3, size='small_shallow'), train_set=frames(4, HW))
    return (tmp_path / 'runs' / 'unet' / 'last.pt').read_bytes()


def _edited(path: Path, edit) -> bytes:
    """``path``'s training state with ``edit`` applied to it (a copy of its weights), as the bytes torch writes."""
    import io
    blob = torch.load(path, weights_only=True)
    blob['model'] = dict(blob['model'])
    edit(blob)
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


@pytest.mark.parametrize('content,says', [
    (lambda p: p.read_bytes()[:2000], r'is truncated or not a training state \(last.pt\): is not a torch checkpoint'),
    # weights of this run's own model (same arch, arch_config and classes) that lack a key: damaged, not 'a run of
    # another model (num_classes: 3, data_root: ...)' (this run's own settings)
    (lambda p: _edited(p, lambda b: b['model'].pop(next(iter(b['model'])))),
     r'last.pt is damaged: its weights do not fit the model its own config names \(keyframe_fpn, 3 classes, '
     r"arch_config \{'fpn_ch': 32\}\), or another vidseg_ros version wrote it; resume from an intact last.pt.* "
     r'1 missing key'),
    (lambda p: _edited(p, lambda b: b.update(model=None)), r'last.pt is damaged: model is NoneType; resume from'),
    (lambda p: _edited(p, lambda b: b.update(numpy_rng=b['numpy_rng'][:10])),
     r'last.pt is damaged: its random number states do not restore \(index 10 is out of bounds'),
    (lambda p: b'', r'is truncated or not a training state \(last.pt\): is truncated or corrupt'),
    (lambda p: b'garbage\n', r'is truncated or not a training state \(last.pt\): is not a loadable torch checkpoint'),
    (lambda p: (p.parent.parent.parent / 'user.pt').read_bytes(), r'it is a model checkpoint, without model'),
    (lambda p: _state_of_another_arch(p.parent.parent.parent),
     r'is a run of another model \(arch: recurrent_unet, here keyframe_fpn\)')])
def test_resuming_from_a_damaged_or_wrong_last_pt_names_it(tmp_path, content, says):
    """Truncated: exit 1 'PytorchStreamReader failed'; a model copied there: KeyError 'model'; 0 bytes: EOFError
    without the path; text: torch's advice to load with weights_only=False; another arch: 'num_classes: 6'; a weight
    gone: 'a run of another model' of this run's own settings; no weights: TypeError; a short RNG state: IndexError."""
    from vidseg_ros.models import create_model
    _user_model(tmp_path / 'user.pt')
    cfg = _cfg(tmp_path, arch='keyframe_fpn', arch_config={'fpn_ch': 32})
    _train_real = lambda: train(cfg, resume=True, model=create_model('keyframe_fpn', num_classes=3, fpn_ch=32),  # noqa: E731
                                train_set=frames(4, HW))
    _train_real()
    last = tmp_path / 'runs' / 't' / 'last.pt'
    last.write_bytes(content(last))
    with pytest.raises(ConfigError, match=says) as e:
        _train_real()
    assert 'weights_only=False' not in str(e.value)


def test_a_teacher_of_another_class_count_is_refused_before_training(tmp_path):
    """A 6-class run with an 11-class teacher: IndexError 'Target 8 is out of bounds' at the first step."""
    teacher = create_model('keyframe_fpn', num_classes=11, fpn_ch=32)
    path = save_checkpoint(tmp_path / 'teacher.pt', teacher, default_meta('keyframe_fpn', teacher.arch_config))
    cfg = _cfg(tmp_path, mode='keyframe', teacher=str(path))
    with pytest.raises(ConfigError, match=r'teacher: .*teacher.pt predicts 11 classes \(Sky, .*\), this run '
                                          r'trains 3 \(0, 1, 2\)'):
        train(cfg, model=TinyKeyframe(), train_set=[])
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('theirs, refused', [(['Sky', ' Road ', 'CAR'], False), (['sky', 'road', 'tree'], True)])
def test_a_teacher_of_the_same_class_names_is_taken_whatever_their_case(tmp_path, theirs, refused):
    """A teacher naming 'Sky' for a dataset's 'sky' was refused here and taken by `vidseg propagate`."""
    from vidseg_ros.training.loop import load_teacher
    teacher = create_model('keyframe_fpn', num_classes=3, fpn_ch=32)
    path = save_checkpoint(tmp_path / 'teacher.pt', teacher,
                           default_meta('keyframe_fpn', teacher.arch_config, classes=theirs))
    cfg = _cfg(tmp_path, mode='keyframe', teacher=str(path))
    info = {'names': ['sky', 'road', 'car'], 'colors': None}
    if refused:
        with pytest.raises(ConfigError, match=r'teacher: .*predicts 3 classes \(sky, road, tree\), this run '
                                              r'trains 3 \(sky, road, car\)'):
            load_teacher(cfg, info, torch.device('cpu'))
    else:
        assert not load_teacher(cfg, info, torch.device('cpu')).training


def _raw_id_drive(tmp_path, frames: int = 4, beyond=lambda i: i % 2):
    """A dataset.yaml without class names; labels 0, and 5 on the frames ``beyond`` picks (default: odd ones)."""
    import cv2
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
    root = tmp_path / 'drive'
    (root / 'images' / 'a').mkdir(parents=True)
    (root / 'labels' / 'a').mkdir(parents=True)
    records = []
    for i in range(frames):
        image, label = root / 'images' / 'a' / f'{i}.png', root / 'labels' / 'a' / f'{i}.png'
        cv2.imwrite(str(image), np.full((64, 64, 3), 40 * (i % 6), np.uint8))
        cv2.imwrite(str(label), np.full((64, 64), 5 * bool(beyond(i)), np.uint8))
        records.append(FrameRecord('a', i, image, label, i, 'human'))
    write_index(root, records)
    (root / 'dataset.yaml').write_text('ignore_index: 255\n')
    return root


def test_label_ids_beyond_num_classes_are_ignored_with_one_warning(tmp_path, caplog):
    """A dataset.yaml without class names, num_classes 2, labels 0 and 5: IndexError 'Target 5 is out of bounds'."""
    root = _raw_id_drive(tmp_path)
    cfg = _cfg(tmp_path, data_root=str(root), train_split='all', val_split='all', num_classes=2,
               arch='keyframe_fpn', arch_config={'fpn_ch': 32})
    with caplog.at_level('WARNING'):
        out = train(cfg)
    assert out['epochs'] == 1
    warned = [r.getMessage() for r in caplog.records if 'num_classes 2' in r.getMessage()]
    assert len(warned) == 1 and 'label id 5 >= num_classes 2' in warned[0]
    assert warned[0].split(':')[0].endswith(('1.png', '3.png'))      # the first label read that holds one


def test_ids_beyond_num_classes_are_found_as_labels_load_not_by_reading_all_first(tmp_path, monkeypatch, caplog):
    """Start-up read every label file of the train and val splits up to the first with such an id (here the
    last: 2 x 24) only for that warning: a long, silent start on a large dataset. Before the first step, only
    the first batch's labels are read now; the warning comes when the id is read."""
    import cv2
    root = _raw_id_drive(tmp_path, frames=24, beyond=lambda i: i == 23)
    reads, at_first_step = [], []
    imread = cv2.imread
    monkeypatch.setattr(cv2, 'imread', lambda path, *a: reads.append(path) or imread(path, *a))
    cfg = _cfg(tmp_path, data_root=str(root), train_split='all', val_split='all', num_classes=2,
               arch='keyframe_fpn', arch_config={'fpn_ch': 32})
    labels = lambda: [p for p in reads if '/labels/' in __import__('os').fsdecode(p)]     # noqa: E731
    step = lambda info: info['kind'] == 'step' and not at_first_step and at_first_step.append(len(labels()))  # noqa: E731
    with caplog.at_level('WARNING'):
        train(cfg, callback=step)
    assert at_first_step == [cfg.batch_size]
    assert len([r for r in caplog.records if 'label id 5 >= num_classes 2' in r.getMessage()]) == 1


def test_a_training_state_save_on_a_full_disk_names_last_pt_and_leaves_no_temp(tmp_path):
    """torch.save onto a full disk: exit 1 'internal error ... RuntimeError: [enforce fail at inline_container.cc]
    unexpected pos', and last.tmp left on the full disk."""
    import errno

    from support.disk import file_size_limit
    from vidseg_ros.training.loop import save_training_state
    model = TinyKeyframe()
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / 'last.pt'
    with file_size_limit(4096), pytest.raises(OSError) as e:
        save_training_state(path, model, optimizer, {'epoch': 1, 'step': 2, 'best': None, 'history': []},
                            _cfg(tmp_path))
    assert (e.value.errno, e.value.filename) == (errno.EFBIG, str(path))
    assert list(tmp_path.iterdir()) == []


class _Interrupt(KeyboardInterrupt):
    pass


def _interrupt_after_epoch_1(info):
    if info['kind'] == 'epoch' and info['epoch'] == 1:
        raise _Interrupt


def test_an_interrupted_run_leaves_output_as_it_was_and_a_completed_one_writes_its_best(tmp_path):
    """output was saved at each new best epoch: Ctrl-C after epoch 1 of 3 with --overwrite replaced a shipped
    model with a 1-epoch one whose meta said 3 epochs, trained. Now output is written when the run completes."""
    from vidseg_ros.models.checkpoint import read_checkpoint
    user = _user_model(tmp_path / 'user.pt')
    before = user.read_bytes()
    cfg = _cfg(tmp_path, output=str(user), epochs=3)
    with pytest.raises(_Interrupt):
        _train(cfg, overwrite=True, callback=_interrupt_after_epoch_1)
    run_dir = tmp_path / 'runs' / 't'
    assert user.read_bytes() == before and (run_dir / 'best.pt').is_file() and (run_dir / 'last.pt').is_file()
    assert _train(cfg, resume=True)['epochs'] == 3     # its last.pt holds the --overwrite grant for user.pt
    assert user.read_bytes() == (run_dir / 'best.pt').read_bytes()
    assert read_checkpoint(user)['meta']['metrics']['epoch'] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ['runs', 'user.pt']     # no temp left beside it


def test_resuming_a_run_with_best_pt_but_no_last_pt_is_refused(tmp_path):
    """Killed while its first last.pt was written (best.pt is saved before it), --resume started again from
    scratch in silence; it is refused now, and --overwrite starts again."""
    _train(_cfg(tmp_path, epochs=2))
    run_dir = tmp_path / 'runs' / 't'
    (run_dir / 'last.pt').unlink()
    best = (run_dir / 'best.pt').read_bytes()
    with pytest.raises(ConfigError, match=r'runs/t has best.pt but no last.pt: cannot resume; --overwrite to start '
                                          r'again'):
        _train(_cfg(tmp_path, epochs=2), resume=True)
    assert (run_dir / 'best.pt').read_bytes() == best and not (run_dir / 'last.pt').exists()
    out = _train(_cfg(tmp_path, epochs=2), resume=True, overwrite=True)
    assert out['epochs'] == 2 and [r['epoch'] for r in out['history']] == [1, 2]    # from scratch
    assert _train(_cfg(tmp_path, epochs=3), resume=True)['history'][-1]['epoch'] == 3  # and resumable again


def test_an_output_name_of_the_longest_legal_length_is_written_and_a_longer_one_refused_first(tmp_path):
    """A 254-byte output name trained an epoch, then failed: 'internal error ... File name too long' (its
    '.pt.tmp' temp was 258 bytes); a name over the limit failed the same way, after training."""
    import os
    limit = os.pathconf(tmp_path, 'PC_NAME_MAX')
    longest = tmp_path / ('a' * (limit - 3) + '.pt')
    _train(_cfg(tmp_path, output=str(longest)))
    assert longest.is_file()
    with pytest.raises(ConfigError, match=rf'output: the file name a+\.\.\. \({limit + 1} characters\) is '
                                          rf'{limit + 1} bytes, longer than its file system takes \({limit}\)'):
        _train(_cfg(tmp_path, name='other', output=str(tmp_path / ('a' * (limit - 2) + '.pt'))))
    assert not (tmp_path / 'runs' / 'other').exists()


def test_a_missing_relative_data_root_says_it_is_read_from_the_current_folder(tmp_path, monkeypatch):
    """The shipped configs' data_root ../shared/data/camvid, run from another folder: only
    '../shared/data/camvid: No such file or directory'."""
    monkeypatch.chdir(tmp_path)
    for dataset in ('camvid', 'folder'):
        cfg = _cfg(tmp_path, dataset=dataset, data_root='../shared/data/camvid', num_classes=0, ignore_index=-1,
                   val_split='val')
        with pytest.raises(ConfigError, match=rf'data_root: \.\./shared/data/camvid does not exist \(relative paths '
                                              rf'are read from the current folder {tmp_path}: that is '
                                              rf'{tmp_path.parent}/shared/data/camvid\); give an absolute path'):
            train(cfg)
    assert list(tmp_path.iterdir()) == []


def _as_an_older_version_wrote_it(path: Path, nudge: bool = False) -> None:
    """Drop provenance.run_dir (checkpoints made before 1 Dec 2026 lack it); ``nudge``: change one weight too."""
    data = torch.load(path, weights_only=True)
    del data['meta']['provenance']['run_dir']
    if nudge:
        next(iter(data['state_dict'].values())).view(-1)[0] += 1
    torch.save(data, path)


def test_resuming_a_run_of_an_older_version_replaces_the_output_it_wrote(tmp_path):
    """Its output has no provenance.run_dir: --resume said 'output: ... exists and was not written by this run;
    --overwrite to replace it' although that run wrote it. Equal weights to the run's best.pt now count as its own."""
    out = tmp_path / 'out.pt'
    _train(_cfg(tmp_path, output=str(out)))
    run_dir = tmp_path / 'runs' / 't'
    for path in (out, run_dir / 'best.pt'):
        _as_an_older_version_wrote_it(path)
    assert _train(_cfg(tmp_path, output=str(out), epochs=2), resume=True)['epochs'] == 2
    assert out.read_bytes() == (run_dir / 'best.pt').read_bytes()


def test_an_older_output_whose_weights_differ_from_the_run_s_best_is_not_replaced_without_overwrite(tmp_path):
    out = tmp_path / 'out.pt'
    _train(_cfg(tmp_path, output=str(out)))
    _as_an_older_version_wrote_it(out, nudge=True)
    before = out.read_bytes()
    with pytest.raises(ConfigError, match=r'output: .*out.pt exists and cannot tell whether this run \(.*runs/t\) wrote '
                                          r'it \(a checkpoint from an older version has no run_dir, .*\); --overwrite '
                                          r'to replace it'):
        _train(_cfg(tmp_path, output=str(out), epochs=2), resume=True)
    assert out.read_bytes() == before
    assert _train(_cfg(tmp_path, output=str(out), epochs=2), resume=True, overwrite=True)['epochs'] == 2
