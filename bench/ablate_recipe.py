"""Ablation of the generalisation recipe (issue #16): cumulative variants, chosen on the selection split.

Each variant trains from scratch with the same seed and budget from one base config (default
``config/train/camvid_fpn_recipe.yaml``), picks its best epoch on the selection split (drive 0006R0,
held out of training) and scores CamVid val once on that checkpoint. Variants, each adding to the one
before: ``baseline`` (the old recipe's augmentation: scale 0.75-1.33, colour jitter 0.2, plain CE),
``+scale`` (0.5-2.0), ``+photometric`` (hue, blur, noise, jitter 0.3), ``+ohem``, ``+ema``; and
``balanced`` (the full recipe with class-balanced CE instead of OHEM). A change is worth keeping only
if it helps on the selection column; val is reported, never used to choose.

GPU session (full budget, every variant; ``PYTHONPATH=.`` imports ``vidseg_ros`` from the source tree,
since the GPU machine gets the working tree only, not the installed package):
    PYTHONPATH=. python bench/ablate_recipe.py --out runs/ablation
CPU smoke budget here, with the installed package (``make install``; what docs/models.md quotes as a
tiny-budget result):
    OMP_NUM_THREADS=1 nice -n 19 python bench/ablate_recipe.py \\
        --variants baseline,+ema,+scale,+photometric,+ohem,balanced \\
        --set input_hw=[96,128] --set crop_hw=[96,128] --set epochs=16 --set batch_size=8 \\
        --set num_workers=0 --set num_threads=1 --set device=cpu --set val_every=2 --set warmup_steps=20 \\
        --set ema_decay=0.99 --out runs/ablation_cpu
Writes ``<out>/ablation.json`` and ``<out>/ablation.md`` (the table) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import yaml

from vidseg_ros.training.config import load_train_config
from vidseg_ros.training.loop import train

ROOT = Path(__file__).resolve().parents[1]

OFF = {'scale_range': [0.75, 1.33], 'jitter': 0.2, 'hue_jitter': 0.0, 'blur_prob': 0.0, 'noise_std': 0.0,
       'ohem_fraction': 0.0, 'ema_decay': 0.0, 'class_balanced': False}
STEPS = [('baseline', {}), ('+scale', {'scale_range': None}),
         ('+photometric', {'jitter': None, 'hue_jitter': None, 'blur_prob': None, 'noise_std': None}),
         ('+ohem', {'ohem_fraction': None}), ('+ema', {'ema_decay': None})]


def variants(base: dict) -> dict[str, dict]:
    """Cumulative overrides: each step turns some switches from OFF back to the base config's value."""
    out, cur = {}, dict(OFF)
    for name, keys in STEPS:
        cur = {**cur, **{k: base[k] for k in keys}}
        out[name] = dict(cur)
    out['balanced'] = {**cur, 'ohem_fraction': 0.0, 'class_balanced': True}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=str(ROOT / 'config' / 'train' / 'camvid_fpn_recipe.yaml'))
    p.add_argument('--variants', default='', help='comma-separated subset, run in this order (default: all)')
    p.add_argument('--set', action='append', default=[], help='key=value (YAML value), for every variant')
    p.add_argument('--out', default='runs/ablation')
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    sets = {k: yaml.safe_load(v) for k, _, v in (s.partition('=') for s in args.set)}
    base = load_train_config(args.config, sets)
    wanted = [v for v in args.variants.split(',') if v]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    table = variants(vars(base))
    unknown = set(wanted) - set(table)
    if unknown:
        p.error(f'unknown variant(s) {", ".join(sorted(unknown))}; valid: {", ".join(table)}')
    for name in wanted or list(table):          # in the order asked: the key comparison first
        over = table[name]
        run = name.replace('+', 'plus_')
        cfg = load_train_config(args.config, {**sets, **over, 'name': f'{base.name}_{run}',
                                              'runs_dir': str(out), 'output': ''})
        t0 = time.perf_counter()
        summary = train(cfg)
        results[name] = {'select_mIoU': summary['best_mIoU'], 'val_mIoU': summary.get('val', {}).get('mIoU'),
                         'epochs': summary['epochs'], 'steps': summary['history'][-1]['step'],
                         'minutes': (time.perf_counter() - t0) / 60, 'overrides': over}
        (out / 'ablation.json').write_text(json.dumps(results, indent=1))
        (out / 'ablation.md').write_text(markdown(results))     # after every variant: a cut run keeps its rows
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    table = ['| variant | selection mIoU (0006R0) | val mIoU (once) | steps | minutes |', '|---|---|---|---|---|']
    for name, r in results.items():
        val = '-' if r['val_mIoU'] is None else f'{100 * r["val_mIoU"]:.1f}'
        table.append(f'| {name} | {100 * r["select_mIoU"]:.1f} | {val} | {r["steps"]} | {r["minutes"]:.0f} |')
    return '\n'.join(table) + '\n'


if __name__ == '__main__':
    sys.exit(main())
