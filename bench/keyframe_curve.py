#!/usr/bin/env python3
"""Accuracy-latency curve of the fixed and the adaptive key-frame policy (issue #16), one plot.

Streams a labelled real-video split (default: CamVid val, a 15 Hz run, frame stamps passed as in
``vidseg eval``) through the engine once per setting: fixed key intervals k, and the adaptive policy
(``keyframe_policy: adaptive``) over a sweep of ``keyframe_threshold`` with ``keyframe_max_interval``
fixed. Each setting is scored by ``tools.evaluate.EvalSession`` (the code ``vidseg eval`` runs): mIoU on
all and on current frames, TC, key-frame ratio (key frames / frames, the first frame included) and the
amortised model time per frame (``FrameResult.timings_ms['model']``, 1 torch thread). The adaptive
policy also computes a change descriptor on every frame (counted in the engine's pre-processing, not
in 'model'); its cost is measured separately and added to the adaptive points' latency. On a shared
CPU one run's mean is at the mercy of the load at that moment, so the plot's latency axis uses the
pooled estimate ``ratio * K + (1 - ratio) * C`` (K, C: medians over all runs of the per-run mean key
and current frame model times); the table has both. ``--twin`` (default ``models/camvid_fpn.pt``
when present) also scores the per-frame twin the issue's target refers to.

The curve is shown whole: no threshold is picked. The fixed/adaptive comparison is made at equal key
ratio (the adaptive curve interpolated linearly at each fixed point's ratio), in mIoU and in *flips*:
the share of pixels labelled differently from the every-frame (k=1) run, the label-free cost of a stale
cache (mean and 95th percentile over frames). A descriptor check says how well the adaptive policy's
signal (descriptor change since the key frame) ranks the current frames' flips at the largest fixed k,
next to the plain count of frames since the key frame. The hindsight-best placement for each number of
key frames (``keyframe_oracle.py``; it sees the future, so it is a bound, not a policy) shows how much
any adaptive policy could gain on this split; the same pairs replay the adaptive rule offline (checked
against the streamed runs) and an alternative, a key frame when change x frames since the key frame
passes a threshold (``change_x_age``, swept over AGE_THRESHOLDS, not built into the engine). Data whose classes are not the model's (DAVIS
for a CamVid model) is scored label-free: flips, TC and latency, with flips on the plot's y axis.

Prints the markdown tables; writes ``keyframe_curve.json`` and ``keyframe_curve.png`` (left: mIoU vs
key-frame ratio, right: mIoU vs pooled amortised ms per frame) in ``--out``.

    python bench/keyframe_curve.py                                   # CamVid val, the full curve
    python bench/keyframe_curve.py --quick --out /tmp/kc             # a few frames: the CI smoke test
    python bench/keyframe_curve.py --data ../shared/data/davis2016 --split all --max-frames 30   # label-free
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from keyframe_oracle import oracle_points, pair_costs, rule_points  # bench/, next to this script
from vidseg_ros.data.images import read_rgb
from vidseg_ros.engine.policy import change_descriptor, relative_change
from vidseg_ros.models.checkpoint import CheckpointError
from vidseg_ros.tools.evaluate import EvalSession

ROOT = Path(__file__).resolve().parents[1]

INTERVALS = (1, 2, 3, 5, 10)
# relative change of the descriptor between CamVid val frames 1 / 5 / 10 apart: median 0.06 / 0.19 / 0.29,
# so this sweep spans key ratios from about every frame to the max_interval floor, like the fixed points
THRESHOLDS = (0.03, 0.05, 0.07, 0.1, 0.14, 0.2, 0.3, 0.45)
QUICK_FRAMES, QUICK_THRESHOLDS = 12, (0.05, 0.14, 0.3)
# the replayed change x age rule: change at age 1 / 5 / 10 times the age is about 0.06 / 0.95 / 2.9 there
AGE_THRESHOLDS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 4.5)


@torch.inference_mode()      # as in the engine's step
def descriptor_ms(ev: EvalSession, reps: int = 30) -> float:
    """Median time of the adaptive policy's change descriptor on the first frame's network input."""
    rec = next(iter(ev.seqs.values()))[0]
    x, _ = ev.seg.preprocess(read_rgb(rec.image))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        change_descriptor(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def flips(ev: EvalSession, every: list) -> list[float]:
    """Per frame of the last scored setting: share of pixels labelled unlike the every-frame (k=1) run,
    the label-free cost of a stale key-frame cache."""
    return [float((p != e).mean()) for run, ref in zip(ev.runs, every) for p, e in zip(run['pred'], ref)]


def point(policy: str, value, res: dict, ev: EvalSession, every: list, extra_ms: float = 0.0) -> dict:
    """One curve point: the setting, its key ratio, accuracy, amortised latency and where its keys fell."""
    nan = math.nan
    keys_at = [[i for i, k in enumerate(r['is_key']) if k] for r in ev.runs]
    f = flips(ev, every) if every else [nan]
    return {'policy': policy, 'setting': value, 'frames': res['frames'], 'key_frames': res['key_frames'],
            'key_spacing': [np.diff(k).tolist() for k in keys_at],
            'flips': float(np.mean(f)), 'flips_p95': float(np.percentile(f, 95)),
            'key_ratio': res['key_frames'] / max(1, res['frames']),
            'mIoU': res.get('mIoU', nan), 'mIoU_current': res.get('current', {}).get('mIoU', nan),
            'TC': res.get('TC', nan), 'model_ms': res['latency_ms'], 'key_ms': res['latency_key_ms'],
            'current_ms': res['latency_current_ms'], 'descriptor_ms': extra_ms,
            'ms_per_frame': res['latency_ms'] + extra_ms, 'resets': res['resets']}


def pooled_ms(points: list[dict]) -> dict:
    """Key and current frame model ms: medians over runs of each run's mean (robust to a loaded moment)."""
    med = lambda v: statistics.median(v) if v else math.nan                # noqa: E731
    return {'key_ms': med([p['key_ms'] for p in points if p['key_ms'] == p['key_ms']]),
            'current_ms': med([p['current_ms'] for p in points if p['current_ms'] == p['current_ms']])}


def score_twin(args) -> dict:
    """The per-frame twin on the same frames: its mIoU is what the k=5 target is measured against."""
    ev = EvalSession(args.twin, args.data, args.dataset, args.split, max_frames=args.max_frames, device='cpu',
                     max_gap_s=args.max_gap_s)
    res = ev.score(keyframe_interval=1)
    return {'model': _rel(ev.path), 'mIoU': res.get('mIoU', math.nan), 'TC': res.get('TC', math.nan),
            'model_ms': res['latency_ms']}


def at_equal_ratio(fixed: list[dict], curves: dict[str, list[dict]]) -> list[dict]:
    """Each curve's mIoU and flips interpolated at each fixed point's key ratio (None outside its range)."""
    out = []
    for f in fixed:
        row = {'k': f['setting'], 'key_ratio': f['key_ratio']}
        for name, points in curves.items():
            pts = sorted(points, key=lambda p: p['key_ratio'])
            xs = [p['key_ratio'] for p in pts]
            inside = bool(xs) and xs[0] <= f['key_ratio'] <= xs[-1]
            for m in ('mIoU', 'flips'):
                a = float(np.interp(f['key_ratio'], xs, [p[m] for p in pts])) if inside else None
                row.update({f'fixed_{m}': f[m], f'{name}_{m}': a,
                            f'{name}_minus_fixed_{m}': None if a is None else a - f[m]})
        out.append(row)
    return out


def _rank_corr(a, b) -> float:
    """Spearman rank correlation (ties get their mean rank)."""
    def ranks(v):
        v = np.asarray(v, float)
        r = np.empty(len(v))
        r[v.argsort(kind='stable')] = np.arange(len(v))
        for u in np.unique(v):
            r[v == u] = r[v == u].mean()
        return r
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1]) if len(a) > 2 else math.nan


@torch.inference_mode()
def descriptor_check(ev: EvalSession, every: list) -> dict:
    """On the last scored (fixed) setting's current frames: does the adaptive policy's change since the
    key frame track the cache's cost (flips vs the every-frame run) better than the frames since it?"""
    change, since, cost = [], [], flips(ev, every)
    for run, recs in zip(ev.runs, ev.seqs.values()):
        desc = [change_descriptor(ev.seg.preprocess(read_rgb(r.image))[0]).clone() for r in recs]
        last = 0
        for i, key in enumerate(run['is_key']):
            last = i if key else last
            change.append(relative_change(desc[i], desc[last]))
            since.append(i - last)
    cur = [i for i, s in enumerate(since) if s > 0]
    pick = lambda v: [v[i] for i in cur]                               # noqa: E731
    return {'current_frames': len(cur), 'rank_corr_change_flips': _rank_corr(pick(change), pick(cost)),
            'rank_corr_since_key_flips': _rank_corr(pick(since), pick(cost))}


def run(args) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ev = EvalSession(args.model, args.data, args.dataset, args.split, max_frames=args.max_frames,
                     device='cpu', max_gap_s=args.max_gap_s)
    if not ev.timing['video']:
        raise ValueError(f'{args.data} ({args.split}) is {ev.timing["note"]}: a key-frame curve needs real video')
    if ev.seg.kind != 'keyframe':
        raise ValueError(f'{args.model} is a {ev.seg.kind} model: it has no key-frame cache')
    rgb = read_rgb(next(iter(ev.seqs.values()))[0].image)
    for _ in range(3):
        ev.seg.step(rgb)      # warm-up, so the first scored frame is not the slowest
    desc_ms = descriptor_ms(ev)
    t0 = time.perf_counter()
    fixed, every = [], []
    for k in sorted(args.intervals):
        res = ev.score(keyframe_interval=k)
        every = every or ([r['pred'] for r in ev.runs] if k == 1 else [])
        fixed.append(point('fixed', k, res, ev, every))
    check = descriptor_check(ev, every) if every and fixed[-1]['setting'] > 1 else None
    adaptive = [point('adaptive', t, ev.score(keyframe_policy='adaptive', keyframe_threshold=t,
                                               keyframe_max_interval=args.max_interval), ev, every, desc_ms)
                for t in args.thresholds]
    costs = pair_costs(ev, every, args.max_interval) if every and args.oracle else None
    oracle = oracle_points(costs, ev.names) if costs else []
    # the engine's rule replayed from the pairs must give the streamed runs' key frames and flips exactly
    replayed = rule_points(costs, ev.names, args.max_interval, 0.0, args.thresholds) if costs else []
    replay_ok = all(r['key_frames'] == a['key_frames'] and abs(r['flips'] - a['flips']) < 1e-9
                    for r, a in zip(replayed, adaptive)) if costs else None
    age = rule_points(costs, ev.names, args.max_interval, 1.0, AGE_THRESHOLDS) if costs else []
    for p in age:
        p['descriptor_ms'] = desc_ms      # it needs the descriptor on every frame too
    base = next((p['mIoU'] for p in fixed if p['setting'] == 1), math.nan)
    twin = score_twin(args) if args.twin else None
    pooled = pooled_ms(fixed + adaptive)
    for p in fixed + adaptive:
        p['delta_vs_k1'] = p['mIoU'] - base
        p['delta_vs_twin'] = p['mIoU_current'] - twin['mIoU'] if twin else None
    for p in fixed + adaptive + oracle + age:
        p['pooled_ms'] = p['key_ratio'] * pooled['key_ms'] + (1 - p['key_ratio']) * pooled['current_ms'] \
            + p.get('descriptor_ms', 0.0)
    return {'model': _rel(ev.path), 'data': _rel(args.data), 'split': args.split, 'timing': ev.timing,
            'labelled': ev.with_labels,
            'twin': twin, 'pooled': pooled, 'descriptor_check': check,
            'frames': sum(len(v) for v in ev.seqs.values()), 'sequences': len(ev.seqs),
            'max_interval': args.max_interval, 'threads': args.threads, 'descriptor_ms': desc_ms,
            'fixed': fixed, 'adaptive': adaptive, 'oracle': oracle, 'change_x_age': age,
            'replay_matches_engine': replay_ok,
            'equal_ratio': at_equal_ratio(fixed, {'adaptive': adaptive, 'oracle': oracle, 'change_x_age': age}),
            'seconds': time.perf_counter() - t0}


def table(report: dict) -> str:
    f1 = lambda v: '-' if v is None or v != v else f'{100 * v:.1f}'       # noqa: E731
    f2 = lambda v: '-' if v is None or v != v else f'{100 * v:.2f}'      # noqa: E731
    ms = lambda v: '-' if v != v else f'{v:.1f}'                          # noqa: E731
    d1 = lambda v: '-' if v is None or v != v else f'{100 * v:+.1f}'     # noqa: E731
    vs_twin = lambda p: '-' if p['key_ratio'] == 1 else d1(p['delta_vs_twin'])  # noqa: E731
    rows = ['| policy | setting | key ratio | mIoU all | delta vs k=1 | mIoU current | current vs twin | TC | '
            'flips % mean / p95 | ms/frame measured (model + descriptor) | key / current ms | ms/frame pooled |',
            '|' + '---|' * 12]
    for p in report['fixed'] + report['adaptive']:
        setting = f'k={p["setting"]}' if p['policy'] == 'fixed' else f'threshold {p["setting"]:g}'
        lat = ms(p['model_ms']) + (f' + {p["descriptor_ms"]:.2f}' if p['descriptor_ms'] else '')
        rows.append(f'| {p["policy"]} | {setting} | {p["key_ratio"]:.3f} | {f1(p["mIoU"])} | '
                    f'{d1(p["delta_vs_k1"])} | {f1(p["mIoU_current"])} | {vs_twin(p)} | {f1(p["TC"])} | '
                    f'{f2(p["flips"])} / {f2(p["flips_p95"])} | {lat} | {ms(p["key_ms"])} / {ms(p["current_ms"])} | '
                    f'{ms(p["pooled_ms"])} |')
    rows += ['', '| fixed k | key ratio | mIoU fixed | mIoU adaptive (interpolated) | adaptive - fixed | '
             'mIoU change x age | mIoU oracle | flips % fixed | flips % adaptive | adaptive - fixed | '
             'flips % change x age | flips % oracle |', '|' + '---|' * 12]
    for e in report['equal_ratio']:
        diff = lambda m, f: '-' if e[m] is None or e[m] != e[m] else f'{100 * e[m]:+.{f}f}'    # noqa: E731
        rows.append(f'| {e["k"]} | {e["key_ratio"]:.3f} | {f1(e["fixed_mIoU"])} | {f1(e["adaptive_mIoU"])} | '
                    f'{diff("adaptive_minus_fixed_mIoU", 1)} | {f1(e.get("change_x_age_mIoU"))} | '
                    f'{f1(e.get("oracle_mIoU"))} | {f2(e["fixed_flips"])} | {f2(e["adaptive_flips"])} | '
                    f'{diff("adaptive_minus_fixed_flips", 2)} | {f2(e.get("change_x_age_flips"))} | '
                    f'{f2(e.get("oracle_flips"))} |')
    check = report['descriptor_check']
    if report['replay_matches_engine'] is not None:
        rows += ['', f'Offline replay of the engine\'s adaptive rule matches the streamed runs: '
                 f'{report["replay_matches_engine"]}.']
    if check:
        rows += ['', f'Descriptor check (fixed k={report["fixed"][-1]["setting"]}, {check["current_frames"]} current '
                 f'frames): rank correlation with flips: change since the key frame '
                 f'{check["rank_corr_change_flips"]:.2f}, frames since it {check["rank_corr_since_key_flips"]:.2f}.']
    twin = report['twin']
    if twin:
        rows += ['', f'Per-frame twin {Path(twin["model"]).name}: mIoU {f1(twin["mIoU"])}, TC {f1(twin["TC"])}, '
                 f'{ms(twin["model_ms"])} ms/frame. Pooled: key {ms(report["pooled"]["key_ms"])} ms, '
                 f'current {ms(report["pooled"]["current_ms"])} ms.']
    return '\n'.join(rows)


def plot(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    y = 'mIoU' if report['labelled'] else 'flips'      # label-free: the share of labels unlike k=1's
    base = next((p['mIoU'] for p in report['fixed'] if p['setting'] == 1), math.nan)
    for ax, x, label in ((axes[0], 'key_ratio', 'key-frame ratio (key frames / frames)'),
                         (axes[1], 'pooled_ms', 'amortised model ms per frame, pooled (+ descriptor, adaptive)')):
        for name, marker in (('fixed', 'o'), ('adaptive', 's')):
            pts = sorted(report[name], key=lambda p: p[x])
            ax.plot([p[x] for p in pts], [100 * p[y] for p in pts], marker=marker, label=name)
            for p in pts:
                text = f'k={p["setting"]}' if name == 'fixed' else f'{p["setting"]:g}'
                ax.annotate(text, (p[x], 100 * p[y]), textcoords='offset points', xytext=(4, -10 if
                            name == 'adaptive' else 4), fontsize=7)
        for name, style, color, text in (
                ('change_x_age', '-.^', 'tab:purple', 'adaptive, change x frames since key (offline replay)'),
                ('oracle', ':x', 'grey', 'hindsight-best placement, fewest flips (not a policy)')):
            pts = sorted(report.get(name, []), key=lambda p: p[x])
            if pts:
                ax.plot([p[x] for p in pts], [100 * p[y] for p in pts], style, color=color, label=text, ms=4)
        twin = report['twin']
        if twin and twin['mIoU'] == twin['mIoU']:
            ax.axhline(100 * twin['mIoU'], color='tab:green', ls=':', lw=1, label='per-frame twin')
            ax.axhline(100 * twin['mIoU'] - 2.0, color='tab:green', ls='--', lw=0.8, label='twin minus 2.0')
        if base == base:
            ax.axhline(100 * base - 2.0, color='grey', ls='--', lw=0.8, label='k=1 minus 2.0')
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('mIoU, all frames [%]' if y == 'mIoU' else
                       'flips: pixels labelled unlike k=1 [%]\n(label-free: model classes differ)')
    axes[0].legend(fontsize=8)
    fig.suptitle(f'{Path(report["model"]).name} on {Path(report["data"]).name} {report["split"]} '
                 f'({report["timing"]["rate_hz"]:.3g} Hz, {report["frames"]} frames); adaptive: threshold, '
                 f'max interval {report["max_interval"]}; 1 thread, this CPU', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rel(path) -> str:
    """A path as given, or relative to the checkout when inside it (the JSON is kept in docs/)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(','))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', type=Path, default=ROOT.parent / 'shared' / 'data' / 'camvid')
    ap.add_argument('--dataset', default='auto', help='camvid, davis, extracted or auto')
    ap.add_argument('--split', default='val')
    ap.add_argument('--model', default=str(ROOT / 'models' / 'camvid_keyframe_fpn.pt'))
    twin = ROOT / 'models' / 'camvid_fpn.pt'
    ap.add_argument('--twin', default=str(twin) if twin.is_file() else '',
                    help='per-frame twin to score on the same frames; empty = none')
    ap.add_argument('--out', type=Path, default=ROOT / 'runs' / 'keyframe_curve')
    ap.add_argument('--intervals', type=lambda s: tuple(int(v) for v in s.split(',')), default=INTERVALS)
    ap.add_argument('--thresholds', type=_floats, default=None, help=f'default {THRESHOLDS}')
    ap.add_argument('--max-interval', type=int, default=10, help='keyframe_max_interval of the adaptive points')
    ap.add_argument('--max-gap-s', type=float, default=None, help='default: the node\'s')
    ap.add_argument('--max-frames', type=int, default=0, help='per sequence; 0 = all')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--no-oracle', dest='oracle', action='store_false',
                    help='skip the hindsight-best placement (keyframe_oracle.py: every frame on every cache age)')
    ap.add_argument('--quick', action='store_true', help=f'first {QUICK_FRAMES} frames per sequence, '
                                                         f'thresholds {QUICK_THRESHOLDS}')
    args = ap.parse_args(argv)
    if args.quick:
        args.max_frames = args.max_frames or QUICK_FRAMES
        args.thresholds = args.thresholds or QUICK_THRESHOLDS
    args.thresholds = args.thresholds or THRESHOLDS
    if not args.data.exists():
        print(f'keyframe_curve: data not found: {args.data}', file=sys.stderr)
        return 2
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f'keyframe_curve: {str(e)[:300]}', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'keyframe_curve.json').write_text(json.dumps(report, indent=1))
    plot(report, args.out / 'keyframe_curve.png')
    print(table(report))
    print(f'\n{report["timing"]["note"]}; {report["frames"]} frames; descriptor {report["descriptor_ms"]:.2f} ms; '
          f'{report["seconds"]:.0f} s; wrote {args.out}/keyframe_curve.json and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
