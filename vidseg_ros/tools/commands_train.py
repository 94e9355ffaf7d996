"""Plain typed functions behind ``vidseg train | eval | experiment | finetune`` (cli.py wires them).

Each parses nothing and prints nothing itself: it builds the library call, shows a tqdm progress bar
and returns a result dict. ``vidseg`` (or ``python -m vidseg_ros.cli``) is the command line.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

LOG = logging.getLogger(__name__)


class _Progress:
    """tqdm bar fed by the training loop's callback (loss, lr, throughput per step); epoch lines always."""

    def __init__(self, total_epochs: int, enabled: bool = True):
        from tqdm import tqdm
        self.tqdm, self.bar, self.total, self.enabled = tqdm, None, total_epochs, enabled

    def __call__(self, info: dict) -> None:
        if info['kind'] == 'step':
            if not self.enabled:
                return
            if self.bar is None:
                self.bar = self.tqdm(desc=f'epoch {info["epoch"] + 1}/{self.total}', unit='step',
                                     leave=False, dynamic_ncols=True, mininterval=5.0)
            self.bar.update(1)
            self.bar.set_postfix(loss=f'{info["loss"]:.3f}', lr=f'{info["lr"]:.2e}',
                                 img_s=f'{info["samples_per_s"]:.1f}', refresh=False)
        else:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            score = (f'selection mIoU {info["select_mIoU"]:.4f}' if 'select_mIoU' in info else
                     f'val mIoU {info["mIoU"]:.4f}' if 'mIoU' in info else '')
            LOG.info('epoch %d/%d loss %.4f %s (%.0f s)', info['epoch'], self.total, info['loss'], score,
                     info['seconds'])


def train(config: str | Path, resume: bool = False, overrides: dict | None = None,
          progress: bool = True) -> dict:
    """Train from a YAML config (``config/train/*.yaml``); returns the loop's summary.

    Args:
        config: the run's YAML file.
        resume: continue from ``<runs_dir>/<name>/last.pt``.
        overrides: settings that replace the file's (CLI options); None values are ignored.
        progress: show a progress bar (``vidseg train``: when stderr is a terminal).
    """
    from vidseg_ros.training.config import load_train_config
    from vidseg_ros.training.loop import train as train_loop
    cfg = load_train_config(config, overrides)
    return train_loop(cfg, resume=resume, callback=_Progress(cfg.epochs, progress))


def evaluate(model: str | Path, data: str | Path, dataset: str = 'auto', split: str = 'val',
             out_dir: str | Path = 'runs/eval', key_intervals: tuple[int, ...] = (1, 2, 5, 10),
             max_frames: int = 0, card: str | Path | None = None, clip_len: int = 0,
             device: str = 'cpu', max_gap_s: float | None = None) -> dict:
    """Evaluate a model into a new folder ``out_dir/<model>-<split>-<n>``: metrics JSON, plots, card.

    ``card``: also write the model card there (e.g. ``models/<name>.md``); never done by default.
    """
    from vidseg_ros.tools.eval_report import summary_table
    from vidseg_ros.tools.evaluate import new_run_dir, run_evaluation
    out_dir = new_run_dir(out_dir, re.sub(r'[^\w.+-]+', '+', f'{Path(str(model)).stem}-{split}'))
    report = run_evaluation(model, data, dataset=dataset, split=split, out_dir=out_dir,
                            key_intervals=list(key_intervals), max_frames=max_frames, card=card,
                            clip_len=clip_len, device=device, max_gap_s=max_gap_s)
    sys.stdout.write(summary_table(report) + '\n')   # the table; the JSON summary follows
    return {'model': report['model'], 'labelled': report['labelled'], 'out_dir': str(out_dir),
            'metrics': str(out_dir / 'metrics.json'), 'plots': report['plots'],
            'card': report.get('card', []), 'timing': report['timing']['note'],
            'intervals': {k: {m: r.get(m) for m in ('mIoU', 'TC', 'mVC8', 'J&F', 'latency_ms')}
                          for k, r in report['intervals'].items()}}


def experiment(name: str, config: str | Path, out_dir: str | Path = 'runs/experiment',
               overrides: dict | None = None, total_steps: int = 200) -> dict:
    """Run a named experiment (``frames-per-video``) from a base training config."""
    from vidseg_ros.tools.experiment import run_experiment
    out = run_experiment(name, config, out_dir=out_dir, overrides=overrides, total_steps=total_steps)
    sys.stdout.write(out['table'] + '\n')
    return out


def finetune(model: str | Path, frame: str | Path, label: str | Path, sequence: str | Path,
             out_dir: str | Path, steps: int = 100, lr: float = 1e-3,
             labels_dir: str | Path | None = None) -> dict:
    """One-shot fine-tuning on one annotated frame, then label every frame of ``sequence``."""
    from vidseg_ros.tools.finetune import one_shot
    return one_shot(model, frame, label, sequence, out_dir, steps=steps, lr=lr, labels_dir=labels_dir)
