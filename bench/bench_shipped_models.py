"""Latency of the shipped models through the engine, and the ratios that matter.

For each ``models/*.pt``: median model time per frame in the ``StreamSegmenter`` on a CamVid-sized
frame (480x360, resized to the checkpoint's input size), with 1 torch thread; the key-frame model
separately on key and current frames. Prints the key-frame speed-up (full / current frame and mean
at interval 5) and each recurrent model's cost over its per-frame twin, all measured in this run: the
twins run interleaved, frame by frame, so a slow minute of a shared CPU slows both alike.

Run: ``python bench/bench_shipped_models.py [--frames 40]``. Timings on a shared CPU are noisy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter

ROOT = Path(__file__).resolve().parents[1]
TWINS = {'camvid_unet_cgru': 'camvid_unet', 'camvid_fpn_cgru': 'camvid_fpn'}   # recurrent model -> per-frame twin


FRAME = np.random.default_rng(0).integers(0, 255, (360, 480, 3), dtype=np.uint8)   # CamVid-sized


def _warm_segmenter(path: Path, interval: int = 1) -> StreamSegmenter:
    seg = StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu', keyframe_interval=interval))
    for _ in range(3):
        seg.step(FRAME)
    return seg


def _times(path: Path, interval: int, frames: int) -> dict:
    seg = _warm_segmenter(path, interval)
    seg.reset()   # the warm-up's state out of the measurement
    key, cur = [], []
    for _ in range(frames):
        r = seg.step(FRAME)
        (key if r.is_key else cur).append(r.timings_ms['model'])
    med = lambda v: statistics.median(v) if v else float('nan')       # noqa: E731
    return {'key': med(key), 'current': med(cur), 'mean': statistics.fmean(key + cur),
            'hw': seg.net_hw, 'kind': seg.kind}


def _paired(a: Path, b: Path, frames: int) -> tuple[float, float, float]:
    """Median model ms of ``a`` and ``b`` stepping in turn on the same frames, and the median per-pair ratio.
    Which of the two steps first alternates, so neither always finds the caches the other left."""
    segs = [_warm_segmenter(a), _warm_segmenter(b)]
    times = []
    for i in range(frames):
        order = segs if i % 2 == 0 else segs[::-1]
        t = {id(seg): seg.step(FRAME).timings_ms['model'] for seg in order}
        times.append((t[id(segs[0])], t[id(segs[1])]))
    ta, tb = zip(*times)
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in times)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('--frames', type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(1)
    paths = sorted((ROOT / 'models').glob('*.pt'))
    if not paths:
        print('no models/*.pt to benchmark')
        return 0
    res = {}
    for path in paths:
        t1 = _times(path, 1, args.frames)
        line = f'{path.stem:24s} {t1["kind"]:9s} net {t1["hw"][0]}x{t1["hw"][1]}: {t1["mean"]:7.1f} ms/frame'
        if t1['kind'] == 'keyframe':
            t5 = _times(path, 5, args.frames)
            line += (f' | interval 5: key {t5["key"]:.1f} ms, current {t5["current"]:.1f} ms, '
                     f'mean {t5["mean"]:.1f} ms')
            t1['i5'] = t5
        res[path.stem] = t1
        print(line)
    kf = res.get('camvid_keyframe_fpn')
    if kf and 'i5' in kf:
        print(f'key-frame FPN: full/current = {kf["i5"]["key"] / kf["i5"]["current"]:.2f}x, '
              f'interval-5 mean vs every-frame full = {kf["mean"] / kf["i5"]["mean"]:.2f}x faster')
    if 'camvid_fpn' in res and kf and 'i5' in kf:
        print(f'key-frame FPN interval 5 vs per-frame twin: {res["camvid_fpn"]["mean"] / kf["i5"]["mean"]:.2f}x')
    for recurrent, twin in TWINS.items():
        if recurrent in res and twin in res:
            ta, tb, ratio = _paired(ROOT / 'models' / f'{recurrent}.pt', ROOT / 'models' / f'{twin}.pt',
                                    5 * args.frames)
            print(f'{recurrent} / its per-frame twin {twin}, interleaved over {5 * args.frames} frames: '
                  f'{ta:.1f} / {tb:.1f} ms, median ratio {ratio:.3f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
