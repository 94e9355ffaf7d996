"""``vidseg experiment frames-per-video``: the all-frames protocol on densely labelled video.

Same model, same number of optimiser steps, different training sets drawn from the same videos:
1 labelled frame per sequence, 20 per sequence, every frame, and 1 frame plus 19 noise-augmented
copies (as many images as the 20-frame set, but no new content). Each variant is scored on held-out
frames (DAVIS: the last 30% of every sequence) with mIoU, J&F and temporal consistency.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from vidseg_ros.config import ConfigError
from vidseg_ros.tools.eval_report import pyplot_or_none
from vidseg_ros.training.config import TrainConfig, load_train_config, validate
from vidseg_ros.training.metrics import json_ready

if TYPE_CHECKING:
    from torch.utils.data import Dataset

log = logging.getLogger(__name__)

# variant name -> (frames_per_video, noise_copies)
FRAMES_PER_VIDEO = {'1': (1, 0), '20': (20, 0), 'all': (0, 0), '1+19noise': (1, 19)}
EXPERIMENTS = ('frames-per-video',)


def variant_configs(base: TrainConfig, total_steps: int, out_dir: Path,
                    variants: list[str] | None = None) -> dict[str, tuple[TrainConfig, Dataset]]:
    """One config per variant (``variants``: these keys of ``FRAMES_PER_VIDEO``; all by default) with the
    same optimiser step budget (epochs sized per data set), and its training set: built once here (it
    sizes the epochs) and trained on as it is.

    Raises:
        ConfigError: a variant has fewer training samples than one batch, before any variant trains.
    """
    from vidseg_ros.training import data_setup
    from vidseg_ros.training.loop import steps_per_epoch
    unknown = sorted(set(variants or ()) - set(FRAMES_PER_VIDEO))
    if unknown:     # a typo would silently leave the variant out of the comparison
        raise ConfigError(f'unknown frames-per-video variant(s) {", ".join(map(repr, unknown))}; known: '
                          f'{", ".join(FRAMES_PER_VIDEO)}')
    out = {}
    for name, (fpv, noise) in FRAMES_PER_VIDEO.items():
        if variants and name not in variants:
            continue
        cfg = copy.deepcopy(base)
        cfg.name, cfg.frames_per_video, cfg.noise_copies = f'{base.name}_{name}', fpv, noise
        cfg.runs_dir, cfg.output, cfg.val_every = str(out_dir), '', 0
        try:
            validate(cfg)    # the base passed; a variant's own settings (noise_copies) may not fit its mode
            # the set training would build: from the classes resolved as train() resolves them
            train_set = data_setup.train_dataset(data_setup.resolve_classes(cfg))
            n = len(train_set)
            per_epoch = steps_per_epoch(cfg, n)
        except ConfigError as e:
            raise ConfigError(f'frames-per-video variant {name!r}: {e}') from None
        cfg.epochs = epochs_for(total_steps, per_epoch)
        cfg.steps_per_epoch = total_steps // cfg.epochs
        log.info('%s: %d training samples, %d epochs x %d steps', name, n, cfg.epochs, cfg.steps_per_epoch)
        out[name] = cfg, train_set
    return out


def epochs_for(total_steps: int, per_epoch: int) -> int:
    """The fewest epochs that take exactly ``total_steps`` steps, at most ``per_epoch`` each: the smallest divisor of
    ``total_steps`` from ceil(total_steps / per_epoch) on (a prime total: one step an epoch). ceil alone, with
    total_steps // epochs steps each, gave a 21-sample set 48 steps of 50 while a 1-sample set trained 50."""
    epochs = math.ceil(total_steps / per_epoch)
    while total_steps % epochs:
        epochs += 1
    return epochs


def run_experiment(name: str, config: str | Path, out_dir: str | Path = 'runs/experiment',
                   overrides: dict | None = None, total_steps: int = 200,
                   variants: list[str] | None = None) -> dict:
    """Train and evaluate every variant; returns ``{'table': markdown, 'results': {...}}``.

    Args:
        name: experiment name (``frames-per-video``).
        config: base training YAML (dataset with dense labels, e.g. ``config/train/davis_fpn.yaml``).
        out_dir: runs, metrics and the plot go here.
        overrides: settings replacing the YAML's.
        total_steps: optimiser steps per variant (the comparable budget).
        variants: subset of ``FRAMES_PER_VIDEO`` keys; all by default.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f'unknown experiment {name!r}; valid: {", ".join(EXPERIMENTS)}')
    from vidseg_ros.tools.evaluate import run_evaluation
    from vidseg_ros.training.loop import train
    out_dir = Path(out_dir)
    base = load_train_config(config, overrides)
    _require_held_out(base, config)
    configs = variant_configs(base, total_steps, out_dir, variants)
    for cfg, _ in configs.values():   # each variant is a training run: an earlier experiment's is never replaced
        if (out_dir / cfg.name).is_dir() and any((out_dir / cfg.name).glob('*.pt')):
            raise ConfigError(f'{out_dir} already holds this experiment\'s run {cfg.name}; give another '
                              '--out-dir (earlier results are kept)')
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for vname, (cfg, train_set) in configs.items():
        summary = train(cfg, train_set=train_set)
        ev = run_evaluation(summary['best_path'], cfg.data_root, dataset=cfg.dataset,
                            split=cfg.val_split, out_dir=out_dir / f'{cfg.name}_eval',
                            key_intervals=[1], write_card=False)
        r = ev['intervals']['1']
        results[vname] = {'frames_per_video': cfg.frames_per_video, 'noise_copies': cfg.noise_copies,
                          'train_samples': len(train_set), 'steps': summary['history'][-1]['step'],
                          'mIoU': r.get('mIoU'), 'J': r.get('J'), 'F': r.get('F'),
                          'J&F': r.get('J&F'), 'TC': r.get('TC'), 'train_loss': summary['history'][-1]['loss']}
        log.info('%s: %s', vname, results[vname])
    table = results_table(results)
    (out_dir / f'{name}.json').write_text(json.dumps(json_ready(results), indent=1))
    (out_dir / f'{name}.md').write_text(table + '\n')
    _plot(results, out_dir / f'{name}.png')
    return {'table': table, 'results': results, 'out_dir': str(out_dir)}


def _finite_or_0(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _require_held_out(base: TrainConfig, config: str | Path) -> None:
    """The variants are scored on val_split: without one apart from the training split they would be scored
    on their own training frames, a comparison that says nothing."""
    if not base.val_split or base.val_split == base.train_split:
        raise ConfigError(f'{config}: val_split {base.val_split!r} is no held-out split (train_split '
                          f'{base.train_split!r}); the variants would be scored on their training frames: set '
                          'val_split, e.g. tail with train_split head (DAVIS, folder)')


def results_table(results: dict) -> str:
    """Markdown table of the variants."""
    def f(v):
        return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{100 * v:.1f}'
    rows = ['| training frames per video | samples | steps | mIoU | J | F | J&F | TC |',
            '|---|---|---|---|---|---|---|---|']
    for name, r in results.items():
        rows.append(f'| {name} | {r["train_samples"]} | {r["steps"]} | {f(r["mIoU"])} | {f(r["J"])} | '
                    f'{f(r["F"])} | {f(r["J&F"])} | {f(r["TC"])} |')
    return '\n'.join(rows)


def _plot(results: dict, path: Path) -> None:
    """A bar per variant and metric (missing or NaN scores as 0); skipped with a warning without matplotlib."""
    plt = pyplot_or_none()
    if plt is None:
        return
    names = list(results)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, key in enumerate(('mIoU', 'J&F', 'TC')):
        vals = [100 * _finite_or_0(results[n][key]) for n in names]
        ax.bar([j + 0.27 * (i - 1) for j in range(len(names))], vals, width=0.27, label=key)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel('labelled training frames per video')
    ax.set_ylabel('%')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
