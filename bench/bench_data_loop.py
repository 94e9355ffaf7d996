"""Single-machine scaling of the data loop: extract + propagate with 1 and 2 local workers and on a
local Dask cluster of 2 workers, on real video (DAVIS sequences as drives, one bag each).

Each DAVIS sequence becomes one bag (rgb8 Image, 854x480); its ground-truth masks on every 5th frame
play the human labels. Measured in one run, per mode: extract seconds, propagate (flow) seconds,
frames/s, and the ratio to ``local w1``; the outputs of every mode are checked to be byte-identical.
Usage: ``python bench/bench_data_loop.py [--sequences 4] [--frames 40]``; without DAVIS
(``../shared/data``) it uses synthetic clips.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.data.executors import task_executor
from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.labelling.propagate import PropagateConfig
from vidseg_ros.data.labelling.run import propagate_dataset
from vidseg_ros.data.datasets.layouts import read_index, write_index, write_meta

ROOT = Path(__file__).resolve().parents[1]

MODES = [('local w1', 'local', 1), ('local w2', 'local', 2), ('dask w2', 'dask', 2)]


def _drives(n_seq: int, n_frames: int) -> list[tuple[str, list[np.ndarray], list[np.ndarray]]]:
    davis = Path(os.environ.get('VIDSEG_DATA', ROOT.parent / 'shared' / 'data')) / 'davis2016'
    if not davis.is_dir():
        rng = np.random.default_rng(0)
        clips = []
        for s in range(n_seq):
            bg = rng.integers(0, 200, (480, 854, 3), dtype=np.uint8)
            frames, masks = [], []
            for t in range(n_frames):
                img, m = bg.copy(), np.zeros((480, 854), np.uint8)
                img[100:250, 50 + 4 * t:200 + 4 * t], m[100:250, 50 + 4 * t:200 + 4 * t] = 250, 1
                frames.append(img)
                masks.append(m)
            clips.append((f'synthetic{s}', frames, masks))
        return clips
    clips = []
    for seq in sorted((davis / 'JPEGImages' / '480p').iterdir())[:n_seq]:
        files = sorted(seq.glob('*.jpg'))[:n_frames]
        frames = [cv2.imread(str(f))[:, :, ::-1].copy() for f in files]
        masks = [(cv2.imread(str(davis / 'Annotations' / '480p' / seq.name / (f.stem + '.png')),
                             cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8) for f in files]
        clips.append((seq.name, frames, masks))
    return clips


def _label(root: Path, masks_by_bag: dict[str, list[np.ndarray]], k: int = 5) -> None:
    write_meta(root, {'classes': ['background', 'object'], 'ignore_index': 255, 'fps': 24.0})
    recs = read_index(root)
    for i, r in enumerate(recs):
        if r.index % k == 0:
            mask = masks_by_bag[Path(r.bag).name][r.index]
            recs[i] = replace(r, label=write_label(root / 'labels' / r.sequence / f'{r.stamp_ns}.png', mask),
                              label_source='human')
    write_index(root, recs)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sequences', type=int, default=4)
    ap.add_argument('--frames', type=int, default=40)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='vidseg_bench_loop_'))
    try:
        clips = _drives(args.sequences, args.frames)
        bags = []
        for name, frames, _ in clips:
            write_bag(tmp / 'bags' / name, [frames], BagFromFramesConfig(rate_hz=24, camera_info=False))
            bags.append(tmp / 'bags' / name)
        masks = {name: m for name, _, m in clips}
        n = sum(len(f) for _, f, _ in clips)
        rows, trees = [], []
        for label, executor, workers in MODES:
            out = tmp / label.replace(' ', '_')
            t0 = time.perf_counter()
            extract(bags, out, ExtractConfig(workers=workers), executor=executor)
            t1 = time.perf_counter()
            _label(out, masks)
            t2 = time.perf_counter()
            propagate_dataset(out, PropagateConfig(method='flow'), workers=workers, executor=executor)
            t3 = time.perf_counter()
            rows.append((label, t1 - t0, t3 - t2))
            trees.append(_tree(out))
        t0 = time.perf_counter()
        with task_executor('dask', 2):
            pass
        startup = time.perf_counter() - t0
        same = all(t.keys() == trees[0].keys() and all(t[k] == trees[0][k] for k in t) for t in trees)
        print(f'{len(bags)} bags, {n} frames 854x480 ({"DAVIS" if "synthetic" not in bags[0].name else "synthetic"}),'
              f' {os.cpu_count()} CPU cores; outputs byte-identical across modes: {same}; '
              f'starting a local Dask cluster of 2 workers alone: {startup:.1f} s (in the dask rows)\n')
        print('| mode | extract s | frames/s | vs local w1 | propagate s | frames/s | vs local w1 |')
        print('|---|---|---|---|---|---|---|')
        base_e, base_p = rows[0][1], rows[0][2]
        for label, te, tp in rows:
            print(f'| {label} | {te:.1f} | {n / te:.1f} | {base_e / te:.2f}x | {tp:.1f} | {n / tp:.1f} | '
                  f'{base_p / tp:.2f}x |')
        if not same:
            sys.exit('outputs differ between modes')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
