"""The generalisation recipe's switches: OHEM loss, EMA weights, photometric settings, the recipe YAML."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from support.tiny_models import TinyKeyframe, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.training.config import TrainConfig, load_train_config, validate
from vidseg_ros.training.ema import EMA
from vidseg_ros.training.losses import segmentation_loss

ROOT = Path(__file__).resolve().parents[2]
HW = (64, 64)


def test_ohem_averages_the_hardest_labelled_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, :2] = 255
    plain = segmentation_loss(logits, target, 255)
    assert segmentation_loss(logits, target, 255, ohem_fraction=1.0) == pytest.approx(float(plain))
    nll = F.cross_entropy(logits, target, ignore_index=255, reduction='none')[target != 255]
    k = round(nll.numel() * 0.25)
    hard = segmentation_loss(logits, target, 255, ohem_fraction=0.25)
    assert hard == pytest.approx(float(nll.sort(descending=True).values[:k].mean()))
    assert hard > plain
    logits.requires_grad_(True)
    segmentation_loss(logits, target, 255, class_balanced=True, ohem_fraction=0.5).backward()
    assert logits.grad[0, :, :2].abs().sum() == 0          # ignored pixels get no gradient


def test_ema_follows_the_weights_with_its_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2))
    ema = EMA(model, decay=0.9)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 5
    ema.update(model, step=1000)                             # ramp over: decay 0.9
    assert torch.allclose(ema.module[0].weight, 0.9 * before + 0.1 * model[0].weight)
    assert int(ema.module[1].num_batches_tracked) == 5 and not ema.module[0].weight.requires_grad
    ema.update(model, step=0)                                # first steps: decay 1/10
    assert torch.allclose(ema.module[0].weight, 0.1 * (0.9 * before + 0.1 * model[0].weight)
                          + 0.9 * model[0].weight)


def test_training_with_ema_saves_and_resumes_the_average(tmp_path):
    from vidseg_ros.models.checkpoint import read_checkpoint
    from vidseg_ros.training.loop import train
    cfg = TrainConfig(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW),
                      batch_size=2, lr=1e-2, epochs=1, hflip=False, runs_dir=str(tmp_path), val_split='',
                      ema_decay=0.99, ohem_fraction=0.5)
    train(cfg, model=TinyKeyframe(), train_set=frames(6, HW))
    last = torch.load(tmp_path / 't' / 'last.pt', weights_only=True)
    best = read_checkpoint(tmp_path / 't' / 'best.pt')['state_dict']
    assert all(torch.equal(best[k], v) for k, v in last['ema'].items())      # the average is shipped
    assert not all(torch.equal(last['model'][k], v) for k, v in last['ema'].items())
    cfg.epochs = 2
    train(cfg, resume=True, model=TinyKeyframe(), train_set=frames(6, HW))
    again = torch.load(tmp_path / 't' / 'last.pt', weights_only=True)
    assert again['epoch'] == 2 and not all(torch.equal(again['ema'][k], v) for k, v in last['ema'].items())


def test_recipe_switches_are_checked_and_default_off():
    cfg = TrainConfig()
    assert (cfg.hue_jitter, cfg.blur_prob, cfg.noise_std, cfg.ohem_fraction, cfg.ema_decay) == (0, 0, 0, 0, 0)
    assert cfg.jitter == 0.2 and cfg.select_split == ''       # what training did before these existed
    for bad in (dict(ohem_fraction=1.5), dict(ema_decay=1.0), dict(mode='keyframe', ohem_fraction=0.2)):
        with pytest.raises(ConfigError):
            validate(TrainConfig(**bad))


def test_recipe_yaml_is_full_resolution_and_selects_on_a_held_out_drive():
    cfg = load_train_config(ROOT / 'config' / 'train' / 'camvid_fpn_recipe.yaml')
    assert cfg.select_split == 'train:0006R0' and cfg.val_split == 'val'
    assert cfg.input_hw == [352, 480] and cfg.crop_hw == [352, 480] and cfg.scale_range == [0.5, 2.0]
    assert cfg.hue_jitter > 0 and cfg.blur_prob > 0 and cfg.noise_std > 0 and cfg.ema_decay > 0
    assert cfg.output == ''          # never overwrites a shipped model by itself


def test_augment_config_carries_the_recipe(tmp_path):
    import cv2
    import numpy as np

    from vidseg_ros.data.datasets.layouts import FrameSource, FrameRecord
    from vidseg_ros.training.data_setup import augment_config
    img = tmp_path / 'a.png'
    cv2.imwrite(str(img), np.zeros((360, 480, 3), np.uint8))
    src = FrameSource([FrameRecord('s', 0, img)], ['a'])
    cfg = TrainConfig(input_hw=[352, 480], crop_hw=[352, 480], scale_range=[0.5, 2.0], hue_jitter=0.05,
                      blur_prob=0.3, noise_std=8.0)
    tr, ev = augment_config(cfg, src, train=True), augment_config(cfg, src, train=False)
    assert (tr.resize_scale, tr.crop_hw, tr.scale_range) == (1.0, [352, 480], [0.5, 2.0])
    assert (tr.jitter, tr.hue_jitter, tr.blur_prob, tr.noise_std) == (0.2, 0.05, 0.3, 8.0)
    assert (ev.jitter, ev.hue_jitter, ev.blur_prob, ev.noise_std, ev.scale_range) == (0, 0, 0, 0, [1.0, 1.0])


def test_ablation_rows_add_one_switch_each():
    import importlib.util
    spec = importlib.util.spec_from_file_location('ablate_recipe', ROOT / 'bench' / 'ablate_recipe.py')
    ablate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablate)
    base = vars(load_train_config(ROOT / 'config' / 'train' / 'camvid_fpn_recipe.yaml'))
    rows = ablate.variants(base)
    assert list(rows) == ['baseline', '+scale', '+photometric', '+ohem', '+ema', 'balanced']
    assert rows['baseline'] == ablate.OFF
    assert rows['+scale']['scale_range'] == [0.5, 2.0] and rows['+scale']['noise_std'] == 0
    assert rows['+photometric']['noise_std'] == 8.0 and rows['+photometric']['ohem_fraction'] == 0
    assert all(rows['+ema'][k] == base[k] for k in ablate.OFF)            # the last row is the recipe
    assert rows['balanced']['class_balanced'] and rows['balanced']['ohem_fraction'] == 0


def test_gpu_pack_keeps_labels_exact_and_the_layout_readable(tmp_path):
    import importlib.util

    import cv2
    import numpy as np

    from vidseg_ros.data.datasets.public_layouts import camvid_source
    spec = importlib.util.spec_from_file_location('pack', ROOT / 'bench' / 'pack_camvid_gpu.py')
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    src = tmp_path / 'cv'
    (src / 'train').mkdir(parents=True)
    (src / 'trainannot').mkdir()
    rng = np.random.default_rng(0)
    for stem in ('0006R0_00930', 'Seq05VD_f00030'):
        cv2.imwrite(str(src / 'train' / f'{stem}.png'), rng.integers(0, 255, (36, 48, 3), dtype=np.uint8))
        cv2.imwrite(str(src / 'trainannot' / f'{stem}.png'), rng.integers(0, 12, (36, 48), dtype=np.uint8))
    assert pack.pack(src, tmp_path / 'out') > 0
    packed = camvid_source(tmp_path / 'out', 'train')
    assert [(r.sequence, r.index, r.image.suffix) for r in packed.records] == [('0006R0', 930, '.jpg'),
                                                                              ('Seq05VD', 30, '.jpg')]
    for r in packed.records:
        assert (src / 'trainannot' / r.label.name).read_bytes() == r.label.read_bytes()
