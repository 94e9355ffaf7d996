"""`vidseg experiment frames-per-video` end to end on a tiny densely labelled drive: every variant trains the same
number of steps on the training set it names, is scored on the held-out split, and the table, JSON and plot
are written; a second experiment into the same folder is refused and the first one's results are kept."""
import json

import numpy as np
import yaml
from typer.testing import CliRunner

from support.eval_data import folder_dataset

from vidseg_ros.cli import app
from vidseg_ros.tools.eval_report import pyplot_or_none


def _base_config(tmp_path):
    """30 labelled 64x64 noise frames of one sequence (left half class 0, right half 1): head = the first 21."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), np.uint8) for _ in range(30)]
    labels = [np.where(np.arange(64)[None, :] < 32, 0, 1).repeat(64, 0).astype(np.uint8) for _ in range(30)]
    folder_dataset(tmp_path / 'drive', images, labels)
    config = tmp_path / 'base.yaml'
    config.write_text(yaml.safe_dump({
        'name': 'x', 'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 16}, 'dataset': 'folder',
        'data_root': str(tmp_path / 'drive'), 'train_split': 'head', 'val_split': 'tail', 'input_hw': [64, 64],
        'batch_size': 1, 'num_threads': 1, 'device': 'cpu', 'hflip': False}))
    return config


def test_every_variant_trains_the_same_steps_on_its_own_set(tmp_path):
    config, out = _base_config(tmp_path), tmp_path / 'out'
    argv = ['experiment', 'frames-per-video', str(config), '--out-dir', str(out), '--total-steps', '2']
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    results = json.loads((out / 'frames-per-video.json').read_text())
    # 1 frame, 20 frames, all 21 of head, 1 frame + 19 noisy copies of it; 2 optimiser steps each
    assert {k: (v['train_samples'], v['steps']) for k, v in results.items()} == {
        '1': (1, 2), '20': (20, 2), 'all': (21, 2), '1+19noise': (20, 2)}
    assert all(0 <= v['mIoU'] <= 1 for v in results.values())
    table = (out / 'frames-per-video.md').read_text()
    assert table.splitlines()[2].startswith('| 1 | 1 | 2 |') and table.strip() in r.stderr
    assert json.loads(r.stdout)['table'].strip() == table.strip()      # stdout is the JSON alone
    assert (out / 'frames-per-video.png').is_file() or pyplot_or_none() is None    # the plot needs matplotlib
    assert all((out / f'x_{k}' / 'best.pt').is_file() for k in results)

    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 2
    assert again.stderr.strip().splitlines()[-1] == (f"vidseg experiment: error: {out} already holds this "
                                                     "experiment's run x_1; give another --out-dir (earlier results "
                                                     "are kept)")
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before
