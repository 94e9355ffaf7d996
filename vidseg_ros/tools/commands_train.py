"""Plain typed functions behind ``vidseg train | eval | experiment | finetune`` (cli.py wires them).

Each parses nothing and prints nothing itself: it builds the library call, shows a tqdm progress bar
and returns a result dict. ``vidseg`` (or ``python -m vidseg_ros.cli``) is the command line.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class _Progress:
    """tqdm bar fed by the training loop's callback (loss, lr, throughput per step); epoch lines always."""

    def __init__(self, total_epochs: int, enabled: bool = True):
        from vidseg_ros.tools.commands_data import tqdm_or_none
        self.tqdm = tqdm_or_none() if enabled else None     # without tqdm: epoch lines only
        self.bar, self.total, self.enabled = None, total_epochs, enabled and self.tqdm is not None

    def __enter__(self) -> _Progress:
        if self.enabled:    # log lines print above the bar (tqdm.write), not after its text on its line
            from tqdm.contrib.logging import logging_redirect_tqdm
            self._redirect = logging_redirect_tqdm(tqdm_class=self.tqdm)
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:    # a run that stopped mid-epoch: its error line starts a line of its own
            self.bar.close()
            self.bar = None
        if self.enabled:
            self._redirect.__exit__(*exc)

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
            log.info('epoch %d/%d loss %.4f %s (%.0f s)', info['epoch'], self.total, info['loss'], score,
                     info['seconds'])


def train(config: str | Path, resume: bool = False, overrides: dict | None = None,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Train from a YAML config (``config/train/*.yaml``); returns the loop's summary.

    Args:
        config: the run's YAML file.
        resume: continue from ``<runs_dir>/<name>/last.pt``.
        overrides: settings that replace the file's (CLI options); a None value is checked like a YAML null.
        progress: show a progress bar (``vidseg train``: when stderr is a terminal).
        overwrite: replace an earlier run of the same name and an existing ``output`` (refused otherwise).
            A ``resume`` of a run started with it, writing the same output, has it too (kept in last.pt:
            ``training.loop.output_grant``).
    """
    from vidseg_ros.training.config import load_train_config
    from vidseg_ros.training.loop import train as train_loop
    from vidseg_ros.training.metrics import json_ready
    cfg = load_train_config(config, overrides)
    with _Progress(cfg.epochs, progress) as bar:
        result = train_loop(cfg, resume=resume, callback=bar, overwrite=overwrite)
    return json_ready(result)


def evaluate(model: str | Path, data: str | Path, split: str, out_dir: str | Path, **options) -> dict:
    """Evaluate a model into a new folder ``out_dir/<model>-<split>-<n>``: metrics JSON, plots, card.

    ``options``: ``evaluate.run_evaluation``'s (dataset, key_intervals, max_frames, clip_len, device,
    ``card``: also write the model card there, e.g. ``models/<name>.md``; never done by default).
    """
    from vidseg_ros.tools.eval_report import summary_table
    from vidseg_ros.tools.evaluate import new_run_dir, run_evaluation
    out_dir = new_run_dir(out_dir, re.sub(r'[^\w.+-]+', '+', f'{Path(str(model)).stem}-{split}'))
    try:
        report = run_evaluation(model, data, split=split, out_dir=out_dir, **options)
    except BaseException:
        if not any(out_dir.iterdir()):   # a refused run leaves no empty numbered folder behind
            out_dir.rmdir()
        raise
    # the table for the person at the terminal on stderr: stdout is the JSON summary alone (`| jq` took the table
    # for broken JSON)
    sys.stderr.write(summary_table(report) + '\n')
    return {'model': report['model'], 'labelled': report['labelled'], 'out_dir': str(out_dir),
            'metrics': str(out_dir / 'metrics.json'), 'plots': report['plots'],
            'card': report.get('card', []), 'timing': report['timing']['note'],
            'intervals': {k: {m: r.get(m) for m in ('mIoU', 'TC', 'mVC8', 'J&F', 'latency_ms')}
                          for k, r in report['intervals'].items()}}


def experiment(name: str, config: str | Path, **options) -> dict:
    """Run a named experiment (``frames-per-video``) from a base training config (``options``:
    ``experiment.run_experiment``'s: out_dir, overrides, total_steps, variants)."""
    from vidseg_ros.tools.experiment import run_experiment
    from vidseg_ros.training.metrics import json_ready
    out = run_experiment(name, config, **options)
    sys.stderr.write(out['table'] + '\n')     # stdout: the JSON alone (it holds the table too)
    return json_ready(out)


def finetune(model: str | Path, frame: str | Path, label: str | Path, sequence: str | Path,
             out_dir: str | Path, **options) -> dict:
    """One-shot fine-tuning on one annotated frame, then label every frame of ``sequence``
    (``options``: ``finetune.one_shot``'s: steps, lr, labels_dir, seed, progress)."""
    from vidseg_ros.tools.finetune import one_shot
    return one_shot(model, frame, label, sequence, out_dir, **options)
