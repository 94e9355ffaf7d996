"""Transfer learning to a user's class set, and class names / licence flowing from the data to the checkpoint."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from vidseg_ros.config import ConfigError
from vidseg_ros.models import create_model
from vidseg_ros.constants import CAMVID_LICENCE
from vidseg_ros.models.checkpoint import (CheckpointError, default_meta, load_checkpoint,
                                          save_checkpoint, transfer_weights)
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.data_setup import dataset_info, resolve_classes
from vidseg_ros.training.checkpoint_meta import checkpoint_meta
from vidseg_ros.training.loop import build_model, train

ROOT = Path(__file__).resolve().parents[2]
HW = [64, 64]
NAMES, COLORS = ['background', 'object'], [[10, 20, 30], [200, 100, 0]]


def _source(path: Path) -> Path:
    """A small 11-class keyframe_fpn checkpoint with a licence of its own."""
    torch.manual_seed(1)
    model = create_model('keyframe_fpn', num_classes=11, fpn_ch=32)
    meta = default_meta('keyframe_fpn', model.arch_config, provenance={'licence': 'SOURCE-WEIGHTS-LICENCE'})
    return save_checkpoint(path, model, meta)


def _user_dataset(root: Path, licence: str | None = 'CC0, recorded by us') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    meta = {'classes': NAMES, 'colors': COLORS, 'ignore_index': 255}
    if licence:
        meta['licence'] = licence
    (root / 'dataset.yaml').write_text(yaml.safe_dump(meta))
    return root


def _drive(root: Path, frames: int = 6, labels: dict | None = None) -> Path:
    """An extracted drive on disk (what `vidseg extract` + `label-import` write): ``frames`` noise frames in
    sequence ``a``; ``labels`` maps a frame index to the class id filling its label (default: frames 0, 3)."""
    import cv2
    import numpy as np
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
    rng = np.random.default_rng(0)
    labels = {0: 1, 3: 0} if labels is None else labels
    (root / 'images' / 'a').mkdir(parents=True)
    (root / 'labels' / 'a').mkdir(parents=True)
    records = []
    for i in range(frames):
        image, label = root / 'images' / 'a' / f'{i}.png', root / 'labels' / 'a' / f'{i}.png'
        cv2.imwrite(str(image), rng.integers(0, 255, (48, 64, 3), np.uint8))
        if i in labels:
            cv2.imwrite(str(label), np.full((48, 64), labels[i], np.uint8))
        records.append(FrameRecord('a', i, image, label if i in labels else None, i,
                                   'human' if i in labels else 'none'))
    write_index(root, records)
    return _user_dataset(root)


def _items(n=4):
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = torch.randint(0, 2, HW, generator=g)
        label[:8] = 255
        items.append({'image': torch.rand(3, *HW, generator=g), 'label': label})
    return items


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(name='transfer', arch='keyframe_fpn', arch_config={'fpn_ch': 32}, dataset='folder',
                data_root=str(_user_dataset(tmp_path / 'drive')), input_hw=HW, batch_size=2, epochs=1,
                val_split='', runs_dir=str(tmp_path / 'runs'), output=str(tmp_path / 'mine.pt'))
    base.update(kw)
    return TrainConfig(**base)


def test_init_from_11_classes_into_2_keeps_every_matching_tensor(tmp_path):
    src = _source(tmp_path / 'src.pt')
    cfg = resolve_classes(_cfg(tmp_path, init_from=str(src)))
    assert (cfg.num_classes, cfg.ignore_index) == (2, 255)          # from the data's dataset.yaml
    model, init = build_model(cfg)
    source, _ = load_checkpoint(src)
    own, theirs = model.state_dict(), source.state_dict()
    encoder = [k for k in own if k.startswith('encoder.')]
    assert encoder and all(torch.equal(own[k], theirs[k]) for k in encoder)
    assert own['classifier.weight'].shape[0] == 2
    assert init['kept'] == len(own) - 2 and init['reinitialised'] == 2
    assert sorted(init['reinitialised_names']) == ['classifier.bias', 'classifier.weight']


def test_training_from_an_11_class_model_on_2_named_classes(tmp_path):
    src = _source(tmp_path / 'src.pt')
    cfg = _cfg(tmp_path, init_from=str(src))
    train(cfg, train_set=_items())
    model, meta = load_checkpoint(tmp_path / 'mine.pt')
    assert meta['classes'] == NAMES and meta['palette'] == COLORS and meta['ignore_index'] == 255
    assert meta['arch_config']['num_classes'] == 2 and meta['train_config']['num_classes'] == 2
    prov = meta['provenance']
    assert prov['transfer']['kept'] == len(model.state_dict()) - 2
    assert prov['transfer']['reinitialised'] == 2
    assert prov['data_roots'] == [str(Path(cfg.data_root).resolve())] and prov['transfer']['from'] == str(src)
    assert 'CC0, recorded by us' in prov['licence'] and 'SOURCE-WEIGHTS-LICENCE' in prov['licence']
    assert 'CamVid' not in prov['licence'] and 'DAVIS' not in prov['licence']


def test_a_run_reads_dataset_yaml_once_and_its_checkpoints_agree_with_it(tmp_path, monkeypatch):
    """Classes are resolved from dataset.yaml at the start; every checkpoint's meta (one per epoch here)
    used to read it again, so an edit during the run put another licence into later checkpoints."""
    from vidseg_ros.training import data_setup
    reads = []
    original = data_setup.read_meta
    monkeypatch.setattr(data_setup, 'read_meta', lambda root: (reads.append(root), original(root))[1])
    cfg = _cfg(tmp_path, epochs=2)
    yaml_path = Path(cfg.data_root) / 'dataset.yaml'

    def edit_after_first_epoch(info):
        if info['kind'] == 'epoch' and info['epoch'] == 1:
            yaml_path.write_text(yaml.safe_dump({**yaml.safe_load(yaml_path.read_text()), 'licence': 'EDITED'}))
    result = train(cfg, train_set=_items(), callback=edit_after_first_epoch)
    assert result['epochs'] == 2 and len(reads) == 1
    prov = load_checkpoint(tmp_path / 'mine.pt')[1]['provenance']
    assert 'CC0, recorded by us' in prov['licence'] and 'EDITED' not in prov['licence']


def test_the_shipped_model_transfers_to_two_classes():
    """The issue's case: init_from models/camvid_fpn.pt with num_classes 2 was a size-mismatch traceback."""
    if not (ROOT / 'models' / 'camvid_fpn.pt').is_file():
        pytest.skip('models/camvid_fpn.pt not in this checkout')
    cfg = TrainConfig(dataset='folder', num_classes=2, ignore_index=255,
                      init_from=str(ROOT / 'models' / 'camvid_fpn.pt'))
    model, init = build_model(cfg)
    assert init['reinitialised'] == 2 and init['kept'] > 100 and init['classes'][0] == 'Sky'
    assert model(torch.rand(1, 3, 64, 64)).shape[1] == 2


def test_transfer_refuses_another_architecture():
    unet = create_model('recurrent_unet', num_classes=2, size='small_shallow')
    fpn = create_model('keyframe_fpn', num_classes=2)
    with pytest.raises(CheckpointError, match='shares only 2 of'):
        transfer_weights(unet, fpn.state_dict(), 'fpn.pt')


def test_class_count_and_ignore_value_are_checked_against_the_data(tmp_path):
    with pytest.raises(ConfigError, match='names 2 classes .* set num_classes: 2'):
        resolve_classes(_cfg(tmp_path, num_classes=3))
    with pytest.raises(ConfigError, match='set ignore_index: 255'):
        resolve_classes(_cfg(tmp_path, ignore_index=11))
    with pytest.raises(ConfigError, match=r'missing does not exist; give an absolute path'):
        resolve_classes(_cfg(tmp_path, data_root=str(tmp_path / 'missing')))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ConfigError, match='names no classes'):
        resolve_classes(_cfg(tmp_path, data_root=str(tmp_path / 'empty')))
    cfg = resolve_classes(_cfg(tmp_path, data_root=str(tmp_path / 'empty'), num_classes=3))
    assert (cfg.num_classes, cfg.ignore_index) == (3, 255)
    # a hand-edited dataset.yaml: a string is not a list of names (it became 18 one-letter classes)
    for bad, what in (({'classes': 'background, object'}, 'classes must be a list'),
                      ({'classes': ['a', 'b'], 'colors': [[0, 0]]}, 'colors must be')):
        (tmp_path / 'hand').mkdir(exist_ok=True)
        (tmp_path / 'hand' / 'dataset.yaml').write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=what):
            resolve_classes(_cfg(tmp_path, data_root=str(tmp_path / 'hand')))


def test_licence_comes_from_what_was_used(tmp_path):
    model = create_model('keyframe_fpn', num_classes=2, fpn_ch=32)
    cfg = resolve_classes(_cfg(tmp_path, data_root=str(_user_dataset(tmp_path / 'nolicence', None))))
    prov = checkpoint_meta(model, cfg, {}, dataset_info(cfg))['provenance']
    assert 'licence not recorded' in prov['licence'] and 'nolicence/dataset.yaml' in prov['licence']
    assert 'CamVid' not in prov['licence']
    camvid = resolve_classes(TrainConfig(dataset='camvid', data_root='/nonexistent/camvid'))
    assert (camvid.num_classes, camvid.ignore_index) == (11, 11)
    meta = checkpoint_meta(create_model('keyframe_fpn', num_classes=11, fpn_ch=32), camvid, {},
                           dataset_info(camvid))
    assert CAMVID_LICENCE in meta['provenance']['licence'] and meta['classes'][0] == 'Sky'
    # weights started from a shipped model: its licence text ends with a full stop of its own
    init = {'licence': 'Research use only.', 'from': 'models/x.pt', 'kept': 1, 'reinitialised': 0,
            'reinitialised_names': [], 'unused': 0}
    text = checkpoint_meta(create_model('keyframe_fpn', num_classes=11, fpn_ch=32), camvid, {},
                           dataset_info(camvid), init)['provenance']['licence']
    assert 'Research use only.' in text and '..' not in text


def test_folder_dataset_splits_in_time_and_by_sequence(tmp_path):
    """A user's extracted drive: head trains, tail validates (as DAVIS); sequence names select."""
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
    from vidseg_ros.training.data_setup import open_split
    root = _user_dataset(tmp_path / 'drive')
    records = [FrameRecord(seq, i, root / 'images' / seq / f'{i}.png', stamp_ns=i)
               for seq in ('a', 'b') for i in range(20)]
    write_index(root, records)
    cfg = _cfg(tmp_path, data_root=str(root))
    head, tail = open_split(cfg, 'head'), open_split(cfg, 'tail')
    assert [r.index for r in head.records if r.sequence == 'a'] == list(range(14))
    assert [r.index for r in tail.records if r.sequence == 'a'] == list(range(19, 20))
    assert len(open_split(cfg, 'train').records) == 40                     # the default: everything
    assert {r.sequence for r in open_split(cfg, 'b:head').records} == {'b'}
    with pytest.raises(ConfigError, match='no sequence c'):
        open_split(cfg, 'c')
    assert open_split(cfg, 'a,b').records == open_split(cfg, 'all').records


def test_frozen_parts_keep_their_weights_and_batchnorm_statistics(tmp_path):
    """freeze: a new class set trains the head on a fixed encoder (the old code trained everything)."""
    src = _source(tmp_path / 'src.pt')
    train(_cfg(tmp_path, init_from=str(src), freeze=['encoder', 'laterals.0']), train_set=_items())
    before = load_checkpoint(src)[0].state_dict()
    after = load_checkpoint(tmp_path / 'mine.pt')[0].state_dict()
    fixed = [k for k in after if k.startswith(('encoder.', 'laterals.0.'))]
    assert any(k.endswith('running_mean') for k in fixed)          # BatchNorm statistics are in it
    assert all(torch.equal(after[k], before[k]) for k in fixed)
    moved = [k for k in after if k.startswith('outputs.') and k.endswith('weight')]
    assert any(not torch.equal(after[k], before[k]) for k in moved)   # the rest still trains


@pytest.mark.parametrize('prefixes,message', [(['encoder.nothing'],
                                               'names no part of keyframe_fpn; its parts: encoder'),
                                              (['encoder', 'laterals', 'outputs', 'head_proj', 'classifier'],
                                               'nothing would be trained')])
def test_a_freeze_that_names_nothing_or_everything_is_refused(tmp_path, prefixes, message):
    with pytest.raises(ConfigError, match=message):
        train(_cfg(tmp_path, freeze=prefixes), train_set=_items())


def test_resuming_with_another_freeze_is_a_clear_error(tmp_path):
    train(_cfg(tmp_path, freeze=['encoder'], output=''), train_set=_items())
    with pytest.raises(ConfigError, match=r"trained another set of parameters \(freeze: \['encoder'\]\)"):
        train(_cfg(tmp_path, epochs=2, output=''), resume=True, train_set=_items())


def _tiny():
    from support.tiny_models import TinyKeyframe
    return TinyKeyframe()


def _fpn():
    torch.manual_seed(0)
    return create_model('keyframe_fpn', num_classes=3, fpn_ch=16)


@pytest.mark.parametrize('make,first,then', [(_tiny, ['low'], ['high']),                # as many parameters
                                             (_fpn, ['outputs.2'], ['outputs.3'])])    # and of the same shapes
def test_resuming_with_another_freeze_of_as_many_parameters_is_a_clear_error(tmp_path, make, first, then):
    """The optimiser state is matched to parameters by position: [low] resumed as [high] stopped at the first step
    ('The size of tensor a (8) must match the size of tensor b (3)'); two FPN output layers of one shape swapped
    their Adam moments in silence."""
    from support.tiny_models import frames
    arch = {'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 16}} if make is _fpn else {}
    cfg = TrainConfig(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=[32, 32], batch_size=2,
                      epochs=1, val_split='', runs_dir=str(tmp_path / 'runs'), freeze=first, **arch)
    train(cfg, model=make(), train_set=frames(4, (32, 32)))
    with pytest.raises(ConfigError, match=rf"trained another set of parameters \(freeze: \['{first[0]}'\]\)"):
        train(replace(cfg, epochs=2, freeze=then), resume=True, model=make(), train_set=frames(4, (32, 32)))
    assert train(replace(cfg, epochs=2), resume=True, model=make(), train_set=frames(4, (32, 32)))['epochs'] == 2


def test_real_clips_and_a_teacher_are_in_the_provenance_and_licence(tmp_path):
    """The temporal loss's clips (DAVIS here) and a teacher's masks shape the weights too: the checkpoint
    used to name only data_root, so camvid_fpn_cgru_tc's card said 'camvid:train' and nothing of DAVIS."""
    from vidseg_ros.constants import DAVIS_LICENCE
    from vidseg_ros.tools.eval_report import card_text
    model = create_model('keyframe_fpn', num_classes=11, fpn_ch=32)
    (tmp_path / 'davis' / 'JPEGImages').mkdir(parents=True)
    cfg = resolve_classes(TrainConfig(dataset='camvid', data_root='/nonexistent/camvid', mode='sequence',
                                      temporal_weight=0.3, temporal_data=str(tmp_path / 'davis'),
                                      temporal_split='head'))
    meta = checkpoint_meta(model, cfg, {}, dataset_info(cfg))
    prov = meta['provenance']
    assert CAMVID_LICENCE.rstrip('.') in prov['licence'] and DAVIS_LICENCE.rstrip('.') in prov['licence']
    assert f'{tmp_path / "davis"}:head' in prov['data'] and 'temporal loss' in prov['data']
    assert str((tmp_path / 'davis').resolve()) in prov['data_roots']
    report = {'model': 'm.pt', 'device': 'cpu', 'data': 'd', 'split': 'val', 'sequences': 1, 'intervals': {
        '1': {'latency_ms': 1.0, 'latency_key_ms': 1.0, 'latency_current_ms': float('nan'), 'all': {}}}}
    card = card_text(report, meta)
    assert 'temporal_weight: 0.3' in card and 'DAVIS' in card
    # a user's own drive as the clips: its dataset.yaml licence; a teacher checkpoint: its licence
    drive = _user_dataset(tmp_path / 'drive_clips', 'CC0 clips of ours')
    (drive / 'index.csv').write_text('')
    teacher = _source(tmp_path / 'teacher.pt')
    cfg = TrainConfig(dataset='camvid', data_root='/nonexistent/camvid', mode='keyframe', teacher=str(teacher))
    cfg_clips = TrainConfig(dataset='camvid', data_root='/nonexistent/camvid', mode='sequence', temporal_weight=1,
                            temporal_data=str(drive))
    assert 'SOURCE-WEIGHTS-LICENCE' in checkpoint_meta(model, cfg, {}, dataset_info(cfg))['provenance']['licence']
    assert 'CC0 clips of ours' in checkpoint_meta(model, cfg_clips, {}, dataset_info(cfg_clips))['provenance']['licence']
    # neither used: nothing added
    plain = TrainConfig(dataset='camvid', data_root='/nonexistent/camvid')
    assert checkpoint_meta(model, plain, {}, dataset_info(plain))['provenance']['data_roots'] == [
        str(Path('/nonexistent/camvid').resolve())]
    with pytest.raises(ConfigError, match='temporal_data'):
        dataset_info(TrainConfig(dataset='camvid', data_root='/nonexistent/camvid', mode='sequence',
                                 temporal_weight=1, temporal_data=str(tmp_path / 'nope')))


def test_resuming_on_data_with_another_class_count_is_a_clear_error(tmp_path):
    """The run's last.pt has 3 classes, the changed data names 2: it was a size-mismatch RuntimeError from
    load_state_dict (exit 1, "internal error")."""
    three = tmp_path / 'three'
    three.mkdir()
    (three / 'dataset.yaml').write_text(yaml.safe_dump({'classes': ['a', 'b', 'c'], 'ignore_index': 255}))
    train(_cfg(tmp_path, data_root=str(three), output=''), train_set=_items())
    with pytest.raises(ConfigError, match=r'last.pt is a run of another model \(num_classes: 3, data_root: '
                                          r'.*three\); resume with that config and data, or start a new run.*'
                                          r'classifier.weight: file \(3, 16, 1, 1\) vs model \(2, 16, 1, 1\)'):
        train(_cfg(tmp_path, epochs=2, output=''), resume=True, train_set=_items())


@pytest.mark.parametrize('split,says', [
    ('val_split', "val_split: 'tail' of .*drive: none of its 0 frames is labelled; name another split .*or "
                  "val_split: '' to train without validation"),    # was StopIteration (exit 1)
    ('train_split', "train_split: 'tail' of .*drive: none of its 0 frames is labelled; label some of its frames")])
def test_a_split_without_labelled_frames_names_the_split_and_the_data(tmp_path, split, says):
    """The tutorial's val_split: tail on a 6-frame drive: tail (after a 5-frame gap) is empty."""
    cfg = _cfg(tmp_path, data_root=str(_drive(tmp_path / 'drive')), train_split='all', val_split='all')
    with pytest.raises(ConfigError, match=says):
        train(replace(cfg, **{split: 'tail'}))
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'mine.pt').exists()


def test_a_validation_split_of_unlabelled_frames_is_refused_before_training(tmp_path):
    """20 frames, labels on 0 and 3: tail is frame 19, unlabelled. Training ran, every score was NaN, so no
    epoch was ever best: exit 0 without best.pt or output."""
    cfg = _cfg(tmp_path, data_root=str(_drive(tmp_path / 'drive', frames=20)), train_split='head', val_split='tail')
    with pytest.raises(ConfigError, match=r"val_split: 'tail' of .*drive: none of its 1 frames is labelled"):
        train(cfg)
    assert not (tmp_path / 'runs').exists()


def test_train_output_is_strict_json_when_a_score_is_undefined(tmp_path):
    """Validation frames labelled only with the ignore value have no mIoU (NaN): `vidseg train` printed a bare
    NaN, which is not JSON (a run with no step printed "loss": NaN the same way); it is null now."""
    import json

    from vidseg_ros.tools.commands_train import train as train_command
    drive = _drive(tmp_path / 'drive', frames=20, labels={0: 1, 3: 0, 19: 255})
    config = tmp_path / 'c.yaml'
    config.write_text(yaml.safe_dump({'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 32}, 'dataset': 'folder',
                                      'data_root': str(drive), 'train_split': 'head', 'val_split': 'tail',
                                      'input_hw': HW, 'batch_size': 2, 'epochs': 1, 'num_threads': 1,
                                      'device': 'cpu', 'runs_dir': str(tmp_path / 'runs')}))
    out = train_command(config, progress=False)
    json.dumps(out, allow_nan=False)
    assert out['history'][-1]['mIoU'] is None and out['history'][-1]['step'] == 1
    assert Path(out['best_path']).is_file()     # an undefined score counts as no validation: a model is kept
    assert out['best_mIoU'] is None


def test_a_run_without_validation_has_no_best_miou(tmp_path):
    """`vidseg train` with val_split '' printed "best_mIoU": -1.0, a score no run can have; it is null, also
    when resumed from a last.pt written before (which stored -1.0)."""
    import json

    from vidseg_ros.tools.commands_train import train as train_command
    from vidseg_ros.training.checkpoints import read_training_state
    config = tmp_path / 'c.yaml'
    config.write_text(yaml.safe_dump({'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 32}, 'dataset': 'folder',
                                      'data_root': str(_drive(tmp_path / 'drive')), 'train_split': 'all',
                                      'val_split': '', 'input_hw': HW, 'batch_size': 2, 'epochs': 1,
                                      'num_threads': 1, 'device': 'cpu', 'runs_dir': str(tmp_path / 'runs')}))
    out = train_command(config, progress=False)
    assert out['best_mIoU'] is None and Path(out['best_path']).is_file()
    assert '"best_mIoU": null' in json.dumps(out, allow_nan=False)
    last = Path(out['run_dir']) / 'last.pt'
    blob = read_training_state(last)      # as an earlier version wrote it
    blob['best'] = -1.0
    torch.save(blob, last)
    again = train_command(config, resume=True, overrides={'epochs': 2}, progress=False)
    assert again['epochs'] == 2 and again['best_mIoU'] is None


def test_the_provenance_command_holds_every_argument(tmp_path, monkeypatch):
    """It kept sys.argv[:8]: `vidseg train C.yaml --set data_root=drive --set output=x.pt --set epochs=1` was
    recorded as '... --set output=x.pt --set', the overrides that made the run lost."""
    argv = ['vidseg', 'train', 'config/train/your_robot.yaml', '--set', 'data_root=my drive', '--set',
            'output=models/x.pt', '--set', 'epochs=1', '--set', 'input_hw=[96,128]']
    monkeypatch.setattr('sys.argv', argv)
    model = create_model('keyframe_fpn', num_classes=2, fpn_ch=32)
    cfg = resolve_classes(_cfg(tmp_path, data_root=str(_user_dataset(tmp_path / 'd', 'ours'))))
    command = checkpoint_meta(model, cfg, {}, dataset_info(cfg))['provenance']['command']
    import shlex
    assert shlex.split(command) == argv
