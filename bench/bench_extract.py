"""Extraction throughput: ``vidseg extract`` with 1 and 2 workers vs plain decode+encode.

Builds a bag from DAVIS frames (raw rgb8 Image and JPEG CompressedImage, 854x480) in a temp
folder, then measures in one run:

* ``decode+encode``: the same messages, already in memory, deserialised, converted to RGB and
  PNG-encoded in a plain loop (no bag reading, no file writing) — the floor of the work; for
  ``keep`` (CompressedImage bytes stored as recorded) the floor is deserialise + write the file;
* ``extract wN``: the full command (bag reading, planning, workers, atomic writes, index).

Prints frames/s and MB/s (bag bytes in), so the overhead of the pipeline and the gain of a second
worker read straight off the table. Usage: ``python bench/bench_extract.py [--frames 120]``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.data.bags.reader import deserialize, read_messages
from vidseg_ros.data.datasets.extract import ExtractConfig, decode_message, extract
from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, frames_to_bag


def _bag_bytes(bag: Path) -> int:
    return sum(p.stat().st_size for p in bag.iterdir() if p.suffix in ('.mcap', '.db3'))


def _plain(bag: Path, fmt: str, tmp: Path) -> float:
    msgs = [m for m in read_messages(bag) if m.msgtype.endswith('Image')]
    t = time.perf_counter()
    for i, m in enumerate(msgs):
        if fmt == 'keep':       # no decode at all: the floor is deserialise + write the bytes
            (tmp / f'plain_{i}.jpg').write_bytes(bytes(deserialize(m).data))
            continue
        rgb, _, _ = decode_message(m)
        if fmt == 'png':
            cv2.imencode('.png', np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    default = Path(os.environ.get('VIDSEG_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))
    ap.add_argument('--data', default=str(default / 'davis2016'))
    ap.add_argument('--frames', type=int, default=120)
    args = ap.parse_args()
    root = Path(args.data) / 'JPEGImages' / '480p'
    if not root.is_dir():
        print(f'DAVIS not found at {args.data}; nothing to measure')
        return
    files = sorted(root.glob('*/*.jpg'))[:args.frames]
    rows = []
    with tempfile.TemporaryDirectory(prefix='vidseg_bench_extract_') as tmp:
        tmp = Path(tmp)
        for enc in ('rgb8', 'jpeg'):
            bag = tmp / f'bag_{enc}'
            frames_to_bag(files, bag, BagFromFramesConfig(encoding=enc, camera_info=False, rate_hz=24))
            mb = _bag_bytes(bag) / 1e6
            n = len(files)
            fmts = ['png'] if enc == 'rgb8' else ['png', 'keep']
            for fmt in fmts:
                dt = _plain(bag, fmt, tmp)
                rows.append((enc, fmt, 'write bytes (plain loop)' if fmt == 'keep' else 'decode+encode (in memory)',
                             n, dt, mb))
                for workers in (1, 2):
                    out = tmp / f'out_{enc}_{fmt}_{workers}'
                    t = time.perf_counter()
                    res = extract([bag], out, ExtractConfig(workers=workers, image_format=fmt))
                    dt = time.perf_counter() - t
                    assert res.written == n, res
                    rows.append((enc, fmt, f'extract, {workers} worker{"s" * (workers > 1)}', n, dt, mb))
    print(f'{len(files)} DAVIS frames 854x480, {os.cpu_count()} CPU cores (shared machine)\n')
    print('| bag encoding | output | pipeline | frames/s | MB/s (bag in) | vs decode+encode |')
    print('|---|---|---|---|---|---|')
    base = {}
    for enc, fmt, what, n, dt, mb in rows:
        if what.startswith(('decode', 'write')):
            base[(enc, fmt)] = dt
        ratio = base[(enc, fmt)] / dt
        print(f'| {enc} | {fmt} | {what} | {n / dt:.1f} | {mb / dt:.1f} | {ratio:.2f}x |')


if __name__ == '__main__':
    main()
