#!/usr/bin/env python3
"""Model speed in one run: key-frame FPN (full vs current frame, amortised over key intervals),
truncated FPN, a naive ResNet-18 FPN for reference, and the recurrent UNet step vs its per-frame twin.

Timings interleave the variants being compared (full, current, ...) in every repetition and report
the best (minimum) time of each, the usual estimator of uncontended cost on a shared, noisy machine
(``--stat median`` for medians). GFLOP ratios are printed alongside as
a noise-free cross-check. Models run as the engine runs them: eval mode, BatchNorm folded.

    python bench/bench_models.py                     # CPU, 512x256 and 1024x512
    python bench/bench_models.py --device cuda --precision fp16 --channels-last
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidseg_ros.models import create_model
from vidseg_ros.models.blocks import fuse_conv_bn

INTERVALS = (2, 5, 10)
STAT = {'name': 'min'}


def build(arch: str, dev: torch.device, channels_last: bool, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = fuse_conv_bn(create_model(arch, **kw).eval()).to(dev)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def gflop(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def interleaved(fns: dict, reps: int, dev: torch.device) -> dict:
    """Best (or median) ms of each callable, timed round-robin so load changes hit all alike."""
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    for fn in fns.values():  # warm-up (allocator, oneDNN primitive cache, cuDNN autotune)
        fn(), fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append((time.perf_counter() - t) * 1e3)
    stat = min if STAT['name'] == 'min' else statistics.median
    return {k: stat(v) for k, v in times.items()}


def bench_keyframe(hw, args, dev, ctx, rows, backbone='light', label='keyframe_fpn'):
    x = torch.randn(1, 3, *hw, device=dev)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    models = {k: build('keyframe_fpn', dev, args.channels_last, backbone=backbone, cached_levels=k) for k in (1, 2)}
    with torch.inference_mode(), ctx():
        caches = {k: m.forward_key(x)[1:] for k, m in models.items()}
        fns = {'full': lambda: models[2].forward_step(x)}
        for k, m in models.items():
            fns[f'cur{k}'] = (lambda m=m, c=caches[k]: m.forward_current(x, *c))
        ms = interleaved(fns, args.reps, dev)
        fl_full = gflop(lambda: models[2].forward_step(x))
        fl_cur = {k: gflop(lambda m=m: m.forward_current(x, *caches[k])) for k, m in models.items()}
    full = ms['full']
    rows.append((f'{label} full frame', hw, full, 1.0, 1.0, fl_full))
    for k in (1, 2):
        cur = ms[f'cur{k}']
        rows.append((f'{label} current frame, cached_levels={k}', hw, cur, cur / full, fl_cur[k] / fl_full,
                     fl_cur[k]))
        for n in INTERVALS:
            am = (full + (n - 1) * cur) / n
            am_fl = (fl_full + (n - 1) * fl_cur[k]) / n
            rows.append((f'{label} amortised interval {n}, cached_levels={k}', hw, am, am / full,
                         am_fl / fl_full, am_fl))
    return full, fl_full


def bench_truncated(hw, args, dev, ctx, rows, full_ms, full_fl):
    x = torch.randn(1, 3, *hw, device=dev)
    m = build('truncated_fpn', dev, args.channels_last, removed_levels=2)
    with torch.inference_mode(), ctx():
        ms = interleaved({'t': lambda: m.forward_step(x)}, args.reps, dev)['t']
        fl = gflop(lambda: m.forward_step(x))
    rows.append(('truncated_fpn (C4/C5, P4/P5 removed)', hw, ms, ms / full_ms, fl / full_fl, fl))


def bench_recurrent(hw, args, dev, ctx, rows, size):
    x = torch.randn(1, 3, *hw, device=dev)
    rec = build('recurrent_unet', dev, args.channels_last, size=size, temporal_cell='cgru')
    deep = build('recurrent_unet', dev, args.channels_last, size=size, temporal_cell='cgru', temporal_levels=2)
    twin = build('recurrent_unet', dev, args.channels_last, size=size, temporal_cell='none')
    with torch.inference_mode(), ctx():
        state, state2 = rec.forward_step(x)[1:], deep.forward_step(x)[1:]
        fns = {'twin': lambda: twin.forward_step(x), 'rec': lambda: rec.forward_step(x, *state),
               'deep': lambda: deep.forward_step(x, *state2)}
        ms = interleaved(fns, max(3, args.reps // 2), dev)
        fl = {k: gflop(fn) for k, fn in fns.items()}
    rows.append((f'recurrent_unet {size} per-frame twin', hw, ms['twin'], 1.0, 1.0, fl['twin']))
    for k, label in (('rec', 'cgru step (all levels)'), ('deep', 'cgru step, temporal_levels=2')):
        rows.append((f'recurrent_unet {size} {label}', hw, ms[k], ms[k] / ms['twin'], fl[k] / fl['twin'], fl[k]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu')
    p.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16'))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = torch default)')
    p.add_argument('--reps', type=int, default=10)
    p.add_argument('--stat', default='min', choices=('min', 'median'))
    p.add_argument('--sizes', default='512x256,1024x512', help='WxH list')
    p.add_argument('--recurrent-sizes', default='small_deep', help="e.g. 'small_deep,small_shallow,original'")
    p.add_argument('--json', type=Path, help='also write the rows as JSON')
    args = p.parse_args(argv)
    STAT['name'] = args.stat
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(args.precision)
    ctx = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype else contextlib.nullcontext
    rows: list = []
    for size in args.sizes.split(','):
        w, h = map(int, size.lower().split('x'))
        full, full_fl = bench_keyframe((h, w), args, dev, ctx, rows)
        bench_truncated((h, w), args, dev, ctx, rows, full, full_fl)
        bench_keyframe((h, w), args, dev, ctx, rows, backbone='resnet18', label='naive resnet18 fpn')
        for rs in filter(None, args.recurrent_sizes.split(',')):
            bench_recurrent((h, w), args, dev, ctx, rows, rs)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'# bench_models: {name}, {args.precision}{", channels_last" if args.channels_last else ""}, '
          f'{args.stat} of {args.reps} interleaved reps, torch {torch.__version__}')
    print('ratio: time relative to the row group\'s full frame / per-frame twin (GFLOP ratio likewise)')
    print(f'{"model / mode":58s} {"input":>9s} {"ms":>8s} {"ratio":>6s} {"GFLOP":>7s} {"GFLOP ratio":>11s}')
    for label, (hh, ww), ms, ratio, fl_ratio, fl in rows:
        print(f'{label:58s} {ww:>4d}x{hh:<4d} {ms:8.2f} {ratio:6.2f} {fl:7.2f} {fl_ratio:11.2f}')
    target = [r for r in rows if r[0] == 'keyframe_fpn amortised interval 5, cached_levels=2']
    print('target: amortised interval 5, cached_levels=2 <= 0.45 of full: ' +
          ', '.join(f'{r[1][1]}x{r[1][0]} {r[3]:.2f} {"OK" if r[3] <= 0.45 else "MISSED"}' for r in target))
    if args.json:
        keys = ('mode', 'hw', 'ms', 'ratio', 'gflop_ratio', 'gflop')
        args.json.write_text(json.dumps([dict(zip(keys, r)) for r in rows],
                                        indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
