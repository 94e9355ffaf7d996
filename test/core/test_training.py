"""Training loop: one step lowers the loss for every family; resume is exact; config checks."""
from pathlib import Path

import pytest
import torch

from support.tiny_models import TinyKeyframe, TinyRecurrent, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.training.config import TrainConfig, load_train_config
from vidseg_ros.training.loop import lr_at, seed_everything, train
from vidseg_ros.training.steps import Batch, StepRunner

HW = (64, 64)


def _cfg(**kw) -> TrainConfig:
    base = dict(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW),
                batch_size=2, lr=1e-3, epochs=1, val_split='', hflip=False)
    base.update(kw)
    return TrainConfig(**base)


def _batch(mode: str, t: int = 3) -> Batch:
    g = torch.Generator().manual_seed(1)
    img = lambda *s: torch.rand(*s, generator=g)                        # noqa: E731
    lab = lambda *s: torch.randint(0, 3, s, generator=g)               # noqa: E731
    if mode == 'perframe':
        return Batch({'image': img(2, 3, *HW), 'label': lab(2, *HW)})
    if mode == 'keyframe':
        return Batch({'key': img(2, 3, *HW), 'current': img(2, 3, *HW), 'label': lab(2, *HW),
                      'key_label': lab(2, *HW), 'distance': torch.tensor([1, 5])})
    return Batch({'frames': img(2, t, 3, *HW), 'labels': lab(2, t, *HW),
                  'label_pos': torch.tensor([0, t - 1])})


def _real(name: str, **kw):
    from vidseg_ros.models import create_model
    return create_model(name, num_classes=3, **kw)


FAMILIES = {
    'fpn': ('perframe', lambda: _real('keyframe_fpn', cached_levels=0)),
    'keyframe_fpn': ('keyframe', lambda: _real('keyframe_fpn', cached_levels=2)),
    'unet_cgru': ('sequence', lambda: _real('recurrent_unet', size='small_shallow',
                                             temporal_cell='cgru')),
    'unet': ('perframe', lambda: _real('recurrent_unet', size='small_shallow', temporal_cell='none')),
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_one_step_lowers_loss(family):
    mode, make = FAMILIES[family]
    seed_everything(0)
    model = make()
    cfg = _cfg(mode=mode, tbptt=2 if mode == 'sequence' else 0)
    runner = StepRunner(cfg, model, torch.device('cpu'))
    # Plain gradient descent: Adam's first step moves every weight by ~lr in sign direction,
    # which is not guaranteed to descend for a freshly initialised BatchNorm network.
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    batch = _batch(mode)
    model.train()         # batch statistics in BatchNorm: the same normalisation before and after
    with torch.no_grad():
        before = runner.loss(batch)[0].item()
    runner.step(batch, opt)
    with torch.no_grad():
        after = runner.loss(batch)[0].item()
    assert after < before


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize('mode', ['perframe', 'sequence'])
def test_resume_restores_exactly(tmp_path, mode):
    data = frames(8, HW) if mode == 'perframe' else _clips(8)
    make = TinyKeyframe if mode == 'perframe' else TinyRecurrent
    cfg = _cfg(mode=mode, epochs=3, runs_dir=str(tmp_path / 'a'), lr_policy='cosine')
    seed_everything(0)
    straight = make()
    train(cfg, model=straight, train_set=data)
    rng_straight = torch.rand(3)

    cfg_b = _cfg(mode=mode, epochs=3, runs_dir=str(tmp_path / 'b'), lr_policy='cosine')
    seed_everything(0)
    with pytest.raises(_Interrupt):
        train(cfg_b, model=make(), train_set=data, callback=_interrupt_after_first_epoch)
    seed_everything(123)                  # a fresh process would start from another state
    resumed = make()
    out = train(cfg_b, resume=True, model=resumed, train_set=data)
    assert out['epochs'] == 3
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(torch.rand(3), rng_straight)


class _Interrupt(Exception):
    pass


def _interrupt_after_first_epoch(info):
    if info['kind'] == 'epoch' and info['epoch'] == 1:
        raise _Interrupt


def _clips(n: int, t: int = 3):
    items = []
    for i, f in enumerate(frames(n, HW)):
        items.append({'frames': f['image'].unsqueeze(0).repeat(t, 1, 1, 1),
                      'labels': f['label'].unsqueeze(0).repeat(t, 1, 1), 'label_pos': i % t})
    return items


def test_keyframe_training_runs_and_checkpoints(tmp_path):
    items = [{'key': f['image'], 'current': f['image'].roll(2, -1), 'label': f['label'].roll(2, -1),
              'key_label': f['label'], 'distance': 2} for f in frames(4, HW)]
    cfg = _cfg(mode='keyframe', epochs=1, runs_dir=str(tmp_path), output=str(tmp_path / 'm.pt'))
    out = train(cfg, model=TinyKeyframe(), train_set=items, val_set=frames(2, HW))
    assert (tmp_path / 't' / 'last.pt').is_file() and (tmp_path / 'm.pt').is_file()
    assert 0.0 <= out['best_mIoU'] <= 1.0


def test_lr_policies():
    cfg = _cfg(lr=1.0, lr_final_ratio=0.01, lr_policy='exp')
    assert lr_at(cfg, 0, 100) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 100, 100) == pytest.approx(0.01)
    cfg.lr_policy = 'cosine'
    assert lr_at(cfg, 50, 100) == pytest.approx(0.505)
    cfg.warmup_steps = 10
    assert lr_at(cfg, 0, 100) == pytest.approx(0.1)


def test_config_validation(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('input_hw: [100, 128]\n')
    with pytest.raises(ConfigError, match='multiples of 32'):
        load_train_config(path)
    path.write_text('epochz: 3\n')
    with pytest.raises(ConfigError, match='unknown setting'):
        load_train_config(path)
    path.write_text('mode: clip\n')
    with pytest.raises(ConfigError, match='not one of'):
        load_train_config(path)


@pytest.mark.parametrize('overrides,message', [
    ({'num_threads': -1}, r'num_threads: -1 must be >= 0 \(.*0 = leave as is\)'),   # was RuntimeError from torch
    ({'steps_per_epoch': -1}, r'steps_per_epoch: -1 must be >= 0'),                  # was 0 steps, exit 0
    ({'lr_policy': 'exp', 'lr_final_ratio': -2}, r'lr_final_ratio: -2.0 must be in \(0, 1\] for lr_policy: exp'),
    ({'lr_policy': 'exp', 'lr_final_ratio': 0}, r'must be in \(0, 1\] for lr_policy: exp'),
    ({'lr_final_ratio': -0.5}, r'lr_final_ratio: -0.5 must be in \[0, 1\] for lr_policy: cosine'),
    ({'lr_final_ratio': 2}, r'must be in \[0, 1\]')])
def test_counts_and_the_final_lr_ratio_are_checked(overrides, message):
    """A negative num_threads was a RuntimeError from torch.set_num_threads, exp with a negative ratio a
    complex learning rate (RuntimeError), cosine with one a silently negative learning rate."""
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, overrides)
    assert lr_at(load_train_config(None, {'lr_final_ratio': 0, 'lr': 1.0}), 100, 100) == 0.0   # cosine to 0


def test_fewer_samples_than_a_batch_is_refused_before_anything_is_written(tmp_path):
    """It made 0 optimiser steps, exited 0 and wrote the untrained model to output, with loss NaN."""
    cfg = _cfg(batch_size=8, runs_dir=str(tmp_path / 'runs'), output=str(tmp_path / 'm.pt'), data_root='drive',
               train_split='head')
    with pytest.raises(ConfigError, match=r"^2 training samples \(train_split 'head' of drive\) are fewer than "
                                          r'one batch \(batch_size 8\): no step would be taken; lower batch_size '
                                          r'to 2 or label more frames$'):
        train(cfg, model=TinyKeyframe(), train_set=frames(2, HW))
    assert not list(tmp_path.iterdir())
    out = train(_cfg(batch_size=2, steps_per_epoch=5, runs_dir=str(tmp_path / 'runs')), model=TinyKeyframe(),
                train_set=frames(5, HW))       # 5 samples: 2 whole batches, the cap above them changes nothing
    assert out['history'][-1]['step'] == 2


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[2] / 'config' / 'train'
    paths = sorted(root.glob('*.yaml'))
    assert paths
    for p in paths:
        load_train_config(p)


@pytest.mark.parametrize('name', ['camvid_fpn', 'camvid_keyframe_fpn', 'camvid_unet_cgru'])
def test_real_camvid_samples(camvid_dir, name):
    from vidseg_ros.training import data_setup
    root = Path(__file__).resolve().parents[2] / 'config' / 'train'
    cfg = load_train_config(root / f'{name}.yaml', {'data_root': str(camvid_dir)})
    item = data_setup.train_dataset(cfg)[0]
    crop = tuple(cfg.crop_hw or cfg.input_hw)
    key = {'perframe': 'image', 'keyframe': 'current', 'sequence': 'frames'}[cfg.mode]
    assert tuple(item[key].shape[-2:]) == crop
    assert int(item['label' if cfg.mode != 'sequence' else 'labels'].max()) <= 11
    val = data_setup.val_dataset(cfg)
    assert len(val) == 101 and tuple(val[0]['image'].shape[-2:]) == tuple(cfg.input_hw)


def test_constant_key_distance(camvid_dir):
    from vidseg_ros.training import data_setup
    root = Path(__file__).resolve().parents[2] / 'config' / 'train'
    cfg = load_train_config(root / 'camvid_keyframe_fpn.yaml',
                            {'data_root': str(camvid_dir), 'key_distance_mode': 'constant',
                             'key_distance': 3})
    ds = data_setup.train_dataset(cfg)
    assert {ds[i]['distance'] for i in range(3)} == {3}
