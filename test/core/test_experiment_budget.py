"""`vidseg experiment frames-per-video` gives every variant the same optimiser step budget (``--total-steps``, 'same
budget each'), whatever the size of its training set: the comparison is between training sets, not budgets."""
import numpy as np
import pytest
import yaml

from support.eval_data import folder_dataset

from vidseg_ros.tools.experiment import variant_configs
from vidseg_ros.training.config import load_train_config
from vidseg_ros.training.schedule import steps_per_epoch


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    """21 labelled 32x32 frames in head (of 30) of one sequence, batch 1: the variants train on 1, 20, 21 and 20
    samples, so 1, 20, 21 and 20 steps an epoch."""
    tmp_path = tmp_path_factory.mktemp('fpv')
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(30)]
    labels = [np.where(np.arange(32)[None, :] < 16, 0, 1).repeat(32, 0).astype(np.uint8) for _ in range(30)]
    folder_dataset(tmp_path / 'drive', images, labels)
    config = tmp_path / 'base.yaml'
    config.write_text(yaml.safe_dump({
        'name': 'x', 'arch': 'keyframe_fpn', 'dataset': 'folder', 'data_root': str(tmp_path / 'drive'),
        'train_split': 'head', 'val_split': 'tail', 'input_hw': [32, 32], 'batch_size': 1, 'device': 'cpu'}))
    return load_train_config(config), tmp_path


@pytest.mark.parametrize('total_steps', [1, 50, 97])
def test_every_variant_gets_exactly_the_total_steps(base, total_steps):
    """The loop trains epochs x steps_per_epoch steps. 50 steps of the 20- and 21-sample sets were 3 epochs of
    50 // 3 = 16 steps: 48, while the 1-frame variant trained 50 (200 on DAVIS' 60 sequences at batch 8: 174 for
    the 1-frame variant, 200 for the others)."""
    cfg, tmp_path = base
    configs = variant_configs(cfg, total_steps, tmp_path / 'out')
    steps = {name: steps_per_epoch(c, len(train_set)) * c.epochs for name, (c, train_set) in configs.items()}
    assert steps == dict.fromkeys(('1', '20', 'all', '1+19noise'), total_steps)
    # an epoch takes no more steps than its set gives (each sample at most once an epoch)
    assert all(c.steps_per_epoch <= len(s) for c, s in configs.values())
