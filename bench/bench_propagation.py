"""Label propagation accuracy on DAVIS 2016 (every frame has ground truth).

Keeps the human mask of every k-th frame (0, k, 2k, ...), propagates to the others and scores the
propagated frames against their true masks. Per method and k it prints:

* ``J`` — the DAVIS region score: foreground IoU per frame, averaged per sequence, then over
  sequences, on the *filled* labels (every pixel assigned);
* ``IoU pooled`` — intersection / union summed over all propagated frames;
* ``J valid`` / ``ignored`` — IoU over the pixels the consistency check kept, and the share it
  marked ignore (flow only);
* ``J with holes`` — J of the labels as ``vidseg propagate`` writes them at ``--min-confidence``
  (ignore pixels count as not-object), what training on them sees as foreground.

Flows are computed once per sequence and reused for every k. Teacher pseudo-labels are scored
when ``--model CHECKPOINT`` is given.

``--camvid`` runs the multi-class check instead: CamVid val is one 15 Hz run labelled on every
frame of it (every 2nd frame of the 30 Hz video); keeping every k-th of those and propagating to
the rest gives mIoU (11 classes, void ignored) of flow and teacher labels, and the teacher's
coverage at its confidence threshold. Usage::

    python bench/bench_propagation.py [--data ../shared/data/davis2016] [--ks 5 10 20]
        [--methods flow tracker] [--preset fine] [--flow-scale 1.0] [--sequences a,b] [--model M]
    python bench/bench_propagation.py --camvid [--ks 2 4 8] [--model models/camvid_fpn.pt]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.labelling.propagate import (FlowCache, PropagateConfig, propagate_flow,
                                       propagate_tracker, teacher_label)
from vidseg_ros.data.datasets.public_layouts import davis_source


def _scores(out: dict, gts: list) -> dict:
    j, jv, jh, ign, inter, union = [], [], [], [], 0, 0
    for i, p in out.items():
        g, f = gts[i] == 1, p.filled == 1
        a, b = int((g & f).sum()), int((g | f).sum())
        j.append(a / b if b else 1.0)
        inter, union = inter + a, union + b
        valid = p.label != 255
        fv = (p.label == 1) & valid
        uv = int(((g | fv) & valid).sum())
        jv.append(int((g & fv).sum()) / uv if uv else 1.0)
        ign.append(1.0 - float(valid.mean()))
        uh = int((g | fv).sum())
        jh.append(int((g & fv).sum()) / uh if uh else 1.0)
    return {'J': float(np.mean(j)), 'inter': inter, 'union': union, 'Jv': float(np.mean(jv)),
            'Jh': float(np.mean(jh)),
            'ign': float(np.mean(ign)), 'frames': len(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    default = Path(os.environ.get('VIDSEG_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))
    ap.add_argument('--data', default=str(default / 'davis2016'))
    ap.add_argument('--ks', type=int, nargs='+', default=[5, 10, 20])
    ap.add_argument('--methods', nargs='+', default=['flow', 'tracker'])
    ap.add_argument('--preset', default='fine')
    ap.add_argument('--flow', default='dis')
    ap.add_argument('--flow-scale', type=float, default=1.0)
    ap.add_argument('--min-confidence', type=float, default=0.5, help='as vidseg propagate --min-confidence')
    ap.add_argument('--tracker', default='medianflow')
    ap.add_argument('--sequences', default='')
    ap.add_argument('--model', default='', help='checkpoint for teacher pseudo-labels')
    ap.add_argument('--camvid', action='store_true', help='multi-class check on CamVid val')
    ap.add_argument('--threshold', type=float, default=0.7, help='teacher confidence threshold')
    args = ap.parse_args()
    if args.camvid:
        camvid(args, default / 'camvid')
        return
    if not Path(args.data).is_dir():
        print(f'DAVIS not found at {args.data}; nothing to measure')
        return
    src = davis_source(args.data, [s for s in args.sequences.split(',') if s] or None)
    cfg = PropagateConfig(flow=args.flow, dis_preset=args.preset, flow_scale=args.flow_scale,
                          tracker=args.tracker, max_distance=10_000, min_confidence=args.min_confidence)
    methods = list(args.methods) + (['teacher'] if args.model else [])
    predict = None
    if args.model:
        from vidseg_ros.tools.commands_data import _engine_predict
        predict = _engine_predict(args.model)
    res: dict = {(m, k): [] for m in methods for k in args.ks}
    secs: dict = {m: 0.0 for m in methods}
    for name, recs in src.sequences().items():
        frames = [read_rgb(r.image) for r in recs]
        gts = [src.read_label(r) for r in recs]
        cache = FlowCache(frames, cfg)
        teacher = None
        for k in args.ks:
            keep = {i: gts[i] for i in range(0, len(frames), k)}
            for m in methods:
                t = time.perf_counter()
                if m == 'flow':
                    out = propagate_flow(frames, keep, 2, cfg, cache)
                elif m == 'tracker':
                    out = propagate_tracker(frames, keep, cfg)
                else:
                    teacher = teacher or {i: teacher_label(f, predict, cfg.teacher_threshold)
                                          for i, f in enumerate(frames)}
                    out = {i: teacher[i] for i in range(len(frames)) if i not in keep}
                secs[m] += time.perf_counter() - t
                res[(m, k)].append(_scores(out, gts))
        line = ' '.join(f'{m}@{k}={res[(m, k)][-1]["J"]:.3f}' for k in args.ks for m in methods)
        print(f'{name:20s} {len(frames):3d} frames  {line}', flush=True)
    print(f'\nDAVIS 2016, {len(src.sequences())} sequences, {len(src.records)} frames; flow = {args.flow} '
          f'{args.preset if args.flow == "dis" else ""} at scale {args.flow_scale}; tracker = {args.tracker}\n')
    print(f'min_confidence {args.min_confidence}\n')
    print('| method | k | propagated frames | J (mean IoU) | IoU pooled | J valid px | ignored % | J with holes |')
    print('|---|---|---|---|---|---|---|---|')
    for m in methods:
        for k in args.ks:
            r = res[(m, k)]
            pooled = sum(x['inter'] for x in r) / max(sum(x['union'] for x in r), 1)
            valid = f'{np.mean([x["Jv"] for x in r]):.3f}' if m == 'flow' else '-'
            ign = f'{100 * np.mean([x["ign"] for x in r]):.1f}' if m == 'flow' else '-'
            holes = f'{np.mean([x["Jh"] for x in r]):.3f}' if m == 'flow' else '-'
            print(f'| {m} | {k} | {sum(x["frames"] for x in r)} | {np.mean([x["J"] for x in r]):.3f} '
                  f'| {pooled:.3f} | {valid} | {ign} | {holes} |')
    print('\nseconds per method (all k, flows included once): ' +
          ', '.join(f'{m} {s:.0f}' for m, s in secs.items()))


def camvid(args, root: Path) -> None:
    """mIoU of flow / teacher labels on CamVid val frames whose labels were held back."""
    from vidseg_ros.data.datasets.public_layouts import camvid_source
    if not root.is_dir():
        print(f'CamVid not found at {root}; nothing to measure')
        return
    src = camvid_source(root, 'val')
    recs = src.sequences()['0016E5']
    frames = [read_rgb(r.image) for r in recs]
    gts = [src.read_label(r) for r in recs]
    cfg = PropagateConfig(dis_preset=args.preset, flow_scale=args.flow_scale, max_distance=10_000,
                          ignore_index=src.ignore_index, teacher_threshold=args.threshold)
    predict = None
    if args.model:
        from vidseg_ros.tools.commands_data import _engine_predict
        predict = _engine_predict(args.model)
    cache = FlowCache(frames, cfg)
    teacher = {i: teacher_label(f, predict, cfg.teacher_threshold, src.ignore_index)
               for i, f in enumerate(frames)} if predict else {}
    print(f'CamVid val 0016E5: {len(frames)} labelled frames at 15 Hz; k counts those frames\n')
    print('| method | k | propagated frames | mIoU filled | mIoU kept px | kept % |')
    print('|---|---|---|---|---|---|')
    for k in (args.ks if args.ks != [5, 10, 20] else [2, 4, 8]):
        keep = {i: gts[i] for i in range(0, len(frames), k)}
        rows = {'flow': propagate_flow(frames, keep, src.num_classes, cfg, cache)}
        if teacher:
            rows[f'teacher@{args.threshold}'] = {i: teacher[i] for i in range(len(frames)) if i not in keep}
        for m, out in rows.items():
            print(f'| {m} | {k} | {len(out)} | {_miou(out, gts, src.num_classes, src.ignore_index, False)} '
                  f'| {_miou(out, gts, src.num_classes, src.ignore_index, True)} '
                  f'| {100 * np.mean([(p.label != src.ignore_index).mean() for p in out.values()]):.1f} |',
                  flush=True)


def _miou(out: dict, gts: list, n: int, ignore: int, kept_only: bool) -> str:
    conf = np.zeros((n, n), np.int64)
    for i, p in out.items():
        pred = p.label if kept_only else p.filled
        ok = (gts[i] != ignore) & (pred < n)
        conf += np.bincount(gts[i][ok].astype(np.int64) * n + pred[ok], minlength=n * n).reshape(n, n)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return f'{np.mean(inter[union > 0] / union[union > 0]):.3f}'


if __name__ == '__main__':
    main()
