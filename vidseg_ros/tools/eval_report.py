"""Plots (matplotlib Agg) and the markdown model card for an evaluation report."""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np

from vidseg_ros.config import current_names
from vidseg_ros.engine.devices import describe_device
from vidseg_ros.files import real_path
from vidseg_ros.text import one_line, printable
from vidseg_ros.training.config import TrainConfig

log = logging.getLogger(__name__)
# characters of one checkpoint field on one line of the card, and of its licence (which keeps its lines)
CARD_FIELD, CARD_LICENCE = 500, 4000


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def pyplot_or_none():
    """matplotlib.pyplot (Agg), or None with one warning where matplotlib is missing: plots are extras, the
    numbers they show are written either way."""
    try:
        return _plt()
    except ImportError as e:
        log.warning('plots skipped: they need the matplotlib package (pip install matplotlib): %s', e)
        return None


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """accuracy_latency.png (labelled runs), per_class_iou.png, confusion.png; returns the paths.

    A character the font lacks (a model or class named in CJK, an emoji) is drawn as a box: matplotlib's
    'Glyph ... missing from font(s)' warning, once per character and plot, said nothing the user could fix.
    Without matplotlib the plots are skipped with one warning: the metrics and the card, written either
    way, are what an evaluation is for (the error came after all the scoring, and lost the card)."""
    plt = pyplot_or_none()
    if plt is None:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', r'Glyph \d+ .*missing from', UserWarning)
        return _write_plots(report, out_dir, plt)


def _write_plots(report: dict, out_dir: Path, plt) -> list[Path]:
    paths = []
    runs = report['intervals']
    if not report.get('labelled'):
        return paths
    # accuracy vs latency: one point per key interval (the key-frame paper's plot)
    fig, ax = plt.subplots(figsize=(5, 4))
    lat = [r['latency_ms'] for r in runs.values()]
    for part, marker in (('all', 'o'), ('current', 's')):
        acc = [100 * r[part]['mIoU'] if r[part]['mIoU'] == r[part]['mIoU'] else np.nan for r in runs.values()]
        if not np.isnan(acc).all():   # k=1 or a recurrent model has no current frames: no empty legend entry
            ax.plot(lat, acc, marker=marker, label=f'{part} frames')
    for k, r in runs.items():
        ax.annotate(f'k={k}', (r['latency_ms'], 100 * r['all']['mIoU']), textcoords='offset points',
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel('mean model latency per frame [ms] (this CPU)')
    ax.set_ylabel('mIoU [%]')
    ax.set_title(Path(report['model']).name)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:    # none when no pixel was scored: matplotlib warned 'No artists ...'
        ax.legend()
    paths.append(_save(fig, out_dir / 'accuracy_latency.png'))
    first = runs[min(runs, key=int)]
    names = report['classes']
    # per-class IoU at the smallest interval
    fig, ax = plt.subplots(figsize=(7, 3.5))
    iou = [first['all']['per_class_iou'].get(n) for n in names]
    scored = [v is not None and v == v for v in iou]   # NaN: neither in these labels nor predicted
    ax.bar(range(len(names)), [100 * v if ok else 0 for v, ok in zip(iou, scored)], color='tab:blue')
    for i, ok in enumerate(scored):
        if not ok:   # no score, which an empty bar would show as 0
            ax.annotate('n/a', (i, 0), textcoords='offset points', xytext=(0, 3), ha='center', fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
    ax.set_ylabel('IoU [%]')
    ax.set_title(f'per-class IoU (mIoU {100 * first["all"]["mIoU"]:.1f}%)')
    paths.append(_save(fig, out_dir / 'per_class_iou.png'))
    # row-normalised confusion matrix
    cm = np.asarray(first['confusion'], dtype=float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(cm, cmap='Blues', vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('ground truth')
    fig.colorbar(im, ax=ax, fraction=0.046)
    paths.append(_save(fig, out_dir / 'confusion.png'))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _pct(v) -> str:
    return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{100 * v:.1f}'


def card_text(report: dict, meta: dict) -> str:
    """Markdown model card: what it is, data, config, metrics, latency, licence."""
    prov = meta.get('provenance', {})
    # a shipped checkpoint's stored config may use earlier setting names: read silently (a deprecation
    # warning is for a user's own YAML or --set, which the user can change)
    tc = current_names(TrainConfig, meta.get('train_config'), warn=lambda text: None)
    name = Path(report['model']).stem
    q = _inline     # someone else's text: a line break in it forged card lines (an '## Evaluation' with made-up
    # numbers in 'Training data', a closed ``` in the config), and 10 MB of it was 10 MB of card (class names are
    # checked where a checkpoint is read: plain, at most 200 characters each)
    lines = [f'# {q(name)}', '',
             f'- **Architecture**: `{q(meta.get("arch"))}` {q(meta.get("arch_config"))}',
             f'- **Classes** ({len(meta.get("classes", []))}): {", ".join(meta.get("classes", []))}; '
             f'ignore index {q(meta.get("ignore_index"))}',
             f'- **Input**: RGB resized to {q(meta.get("input_hw"))} (H, W), ImageNet mean/std',
             f'- **Training data**: {q(prov.get("data", "?"))}',
             f'- **Training**: {q(prov.get("training", prov.get("trained")))}; started from '
             f'`{q(prov.get("init_from") or "scratch (no pretrained weights)")}`; {q(prov.get("date", ""))}',
             f'- **Selection**: {q(prov.get("selection", "not recorded (older checkpoint)"))}',
             f'- **Hardware**: trained on {q(prov.get("hardware") or "not recorded")}; evaluated on '
             f'{describe_device(report["device"])}', '',
             '## Training config', '', '```yaml']
    keys = ('mode', 'input_hw', 'crop_hw', 'epochs', 'batch_size', 'optimizer', 'lr', 'lr_policy',
            'weight_decay', 'class_balanced', 'max_distance', 'feature_weight', 'seq_len', 'seed',
            'select_split', 'scale_range', 'jitter', 'hue_jitter', 'blur_prob', 'noise_std',
            'ohem_fraction', 'ema_decay')
    lines += [f'{k}: {q(tc[k])}' for k in keys if k in tc]
    # what shaped the weights besides the labelled data, shown only where it was used
    used = ['freeze', 'teacher'] + (['temporal_weight', 'temporal_data', 'temporal_split']
                                    if tc.get('temporal_weight') else [])
    lines += [f'{k}: {q(tc[k])}' for k in used if tc.get(k)]
    lines += ['```', '', f'## Evaluation: {report["data"]} ({report["split"]}, {report["sequences"]} '
              f'sequence(s)), device {report["device"]}', '',
              'Metrics at the labels\' full resolution; latency = model time per frame in the engine '
              'on this machine (noisy: shared CPU).',
              f'Timing: {report["timing"]["note"]}.' if report.get('timing') else '', '',
              summary_table(report), '']
    first = report['intervals'][min(report['intervals'], key=int)]
    if report.get('labelled'):
        lines += ['Per-class IoU (interval ' + min(report['intervals'], key=int) + '): ' +
                  ', '.join(f'{n} {_pct(v)}' for n, v in first['all']['per_class_iou'].items()), '']
    licence = str(prov.get('licence') or 'Not recorded in the checkpoint.')
    if len(licence) > CARD_LICENCE:
        licence = f'{licence[:CARD_LICENCE]}... ({len(licence)} characters; the rest is in the checkpoint)'
    lines += ['## Licence', '', licence, '']
    # provenance, licence and config come from whoever made the checkpoint: `cat model_card.md` must not
    # run their terminal escapes (ESC, CR); the card keeps its line breaks
    return printable('\n'.join(lines), keep='\n')


def _inline(value) -> str:
    """A checkpoint's field on one line of the card, at most ``CARD_FIELD`` characters (``text.one_line``)."""
    return one_line(value, CARD_FIELD)


def write_card_file(report: dict, meta: dict, out_dir: Path, also: str | Path | None = None) -> list[Path]:
    """``model_card.md`` in ``out_dir``, and a copy at ``also`` when given (nowhere else: a card beside
    a model is hand-edited and tracked, so it is replaced only on request, and whole or not at all: a full
    disk or Ctrl-C while copying left it truncated)."""
    from vidseg_ros.models.checkpoint import write_file_atomic
    text = card_text(report, meta)
    card = out_dir / 'model_card.md'
    card.write_text(text, encoding='utf-8')
    if also is None:
        return [card]
    also = Path(also)
    also.parent.mkdir(parents=True, exist_ok=True)
    target = real_path(also) if also.is_symlink() else also    # through a link, as a copy wrote (not a loop)
    write_file_atomic(target, text.encode(), shown=also)
    return [card, also]


def summary_table(report: dict) -> str:
    """Markdown table of the intervals (what ``vidseg eval`` prints)."""
    rows = ['| interval | mIoU all | mIoU key | mIoU current | mAcc | pixel acc | TC | mVC8 | '
            'J&F | latency ms (key / current) |', '|' + '---|' * 10]
    for k, r in report['intervals'].items():
        def g(part, key):
            v = r.get(part, {}).get(key) if part else r.get(key)
            return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{100 * v:.1f}'
        lat = f'{r["latency_ms"]:.1f} ({_fmt(r["latency_key_ms"])} / {_fmt(r["latency_current_ms"])})'
        rows.append(f'| {k} | {g("all", "mIoU")} | {g("key", "mIoU")} | {g("current", "mIoU")} | '
                    f'{g("all", "mAcc")} | {g("all", "pixel_acc")} | {g(None, "TC")} | '
                    f'{g(None, "mVC8")} | {g(None, "J&F")} | {lat} |')
    return '\n'.join(rows)


def _fmt(v: float) -> str:
    return '-' if v is None or math.isnan(v) else f'{v:.1f}'
