"""The offline data tools at N and 10 N frames: does time or memory grow faster than the input?

Each case runs in a process of its own (its peak RSS is its own), on tiny frames (32x24) in a temporary folder
that is removed after; the inputs are built before the clock starts. Cases:

* ``write_bag``: ``bag-from-frames``' writer, N frames into one MCAP bag;
* ``read video``: ``VideoFrames`` over an MJPG video of N frames (``bag-from-frames VIDEO``'s reader);
* ``extract`` / ``extract resume``: ``vidseg extract`` of that bag, then again into the same folder (all skipped);
* ``write_index`` / ``read_index``: an index.csv of N rows (``--index-rows``, 100k and 1M by default);
* ``sort names``: ``natural_key`` order of N frame names;
* ``group flat folder``: ``find_sequences`` of a flat folder of N files named ``<date>_<second>_<frame>``
  (30 a prefix, N / 30 sequences);
* ``propagate plan``: ``propagate_dataset`` of N frames labelled every 2nd with the jobs themselves stubbed out
  (the driver's planning, indexing and index write);
* ``propagate plan, frame files``: the same on frame files (labelled every 10th): with the pixel-limit check and
  the frame sizes from the headers;
* ``propagate flow``: a real flow run, N frames labelled every 10th (DIS ultrafast);
* ``teacher peak``: tracemalloc peak of a teacher run over N frames of 320x240 labelled every 2nd.

Prints one table: seconds and peak MB at N and 10 N, and their ratios (linear: about 10 for time; memory holds a
~80 MB interpreter and libraries). Usage: ``python bench/bench_scale_data.py [--n 2000] [--index-rows 100000]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

H, W = 24, 32


def _frames(n: int):
    import numpy as np
    base = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(n):
        f = base.copy()
        f[0, 0, 0] = i % 256
        yield f


def _bag(tmp: Path, n: int) -> Path:
    from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag
    bag = tmp / 'bag'
    write_bag(bag, [_frames(n)], BagFromFramesConfig(rate_hz=30, camera_info=False))
    return bag


def _labelled(root: Path, n: int, every: int, h: int = H, w: int = W, files: bool = True) -> Path:
    """A dataset of ``n`` frames, human labels on every ``every``-th (``files``: the images and labels written)."""
    import cv2
    import numpy as np
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    yy, xx = np.mgrid[0:h, 0:w]
    texture = ((np.sin(xx / 3.0) + np.cos(yy / 2.0)) * 60 + 128).astype(np.uint8)
    recs = []
    for i in range(n):
        image = root / 'images' / f'{i:07d}.png'
        label = root / 'labels' / f'{i:07d}.png' if i % every == 0 else None
        if files:
            cv2.imwrite(str(image), np.dstack([texture, np.roll(texture, i, 1), texture]))
            if label:
                lab = np.zeros((h, w), np.uint8)
                lab[:, i % w:] = 1
                cv2.imwrite(str(label), lab)
        recs.append(FrameRecord('s', i, image, label, (i + 1) * 33_333_333, 'human' if label else 'none'))
    write_index(root, recs)
    write_meta(root, {'classes': ['a', 'b'], 'ignore_index': 255, 'fps': 30.0})
    return root


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def case(name: str, n: int, tmp: Path) -> dict:
    """Run one case in this process -> {label: seconds}, plus extra numbers."""
    if name == 'write_bag':
        from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag
        return {'write_bag': _timed(lambda: write_bag(tmp / 'bag', [_frames(n)], BagFromFramesConfig(
            rate_hz=30, camera_info=False)))}
    if name == 'extract':
        from vidseg_ros.data.datasets.extract import extract
        bag = _bag(tmp, n)
        return {'extract': _timed(lambda: extract([bag], tmp / 'ds')),
                'extract resume': _timed(lambda: extract([bag], tmp / 'ds'))}
    if name == 'video':
        import cv2
        from vidseg_ros.data.video import VideoFrames
        path = tmp / 'drive.avi'
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 30, (W, H))
        for f in _frames(n):
            out.write(f)
        out.release()
        return {'read video': _timed(lambda: sum(1 for _ in VideoFrames(path)))}
    if name == 'index':
        from vidseg_ros.data.datasets.layouts import FrameRecord, read_index, write_index
        recs = [FrameRecord(f'seq_{i // 5000:03d}', i % 5000, tmp / 'images' / f'{i}.png', None, i + 1, 'none',
                            '/data/bag', '/camera/image_raw', 'rgb8') for i in range(n)]
        out = {'write_index': _timed(lambda: write_index(tmp, recs))}
        del recs
        out['read_index'] = _timed(lambda: read_index(tmp))
        return out
    if name == 'sort':
        import random
        from vidseg_ros.data.order import natural_key
        names = [f'frame_{i}.png' for i in range(n)]
        random.Random(0).shuffle(names)
        return {'sort names': _timed(lambda: sorted(names, key=natural_key))}
    if name == 'group':
        from vidseg_ros.data.bags.from_frames import find_sequences
        (tmp / 'flat').mkdir()
        for i in range(n):
            (tmp / 'flat' / f'20240101_{i // 30:06d}_{i % 30:03d}.png').touch()
        return {'group flat folder': _timed(lambda: find_sequences(tmp / 'flat'))}
    if name == 'plan':
        from vidseg_ros.data.labelling import run
        root = _labelled(tmp / 'd', n, 2, files=False)
        run.check_frame_sizes = lambda records: None
        run._job = lambda args: []
        run._job_items = lambda args: iter(())
        return {'propagate plan': _timed(lambda: run.propagate_dataset(root))}
    if name == 'plan_files':
        from vidseg_ros.data.labelling import run
        root = _labelled(tmp / 'd', n, 10)
        run._job = lambda args: []
        run._job_items = lambda args: iter(())
        return {'propagate plan, frame files': _timed(lambda: run.propagate_dataset(root))}
    if name == 'flow':
        from vidseg_ros.data.labelling.propagate import PropagateConfig
        from vidseg_ros.data.labelling.run import propagate_dataset
        root = _labelled(tmp / 'd', n, 10)
        return {'propagate flow': _timed(lambda: propagate_dataset(root, PropagateConfig(dis_preset='ultrafast')))}
    if name == 'teacher':
        import tracemalloc
        import numpy as np
        from vidseg_ros.data.labelling.propagate import PropagateConfig
        from vidseg_ros.data.labelling.run import propagate_dataset
        root = _labelled(tmp / 'd', n, 2, 240, 320)

        def predict(rgb):
            return (rgb[..., 0] % 2).astype(np.uint8), np.full(rgb.shape[:2], 0.9, np.float32)
        tracemalloc.start()
        seconds = _timed(lambda: propagate_dataset(root, PropagateConfig(method='teacher'), predict))
        return {'propagate teacher (MB: tracemalloc peak)': seconds, 'traced_mb': tracemalloc.get_traced_memory()[1] / 2**20}
    raise ValueError(name)


# (case, N for N and 10 N, or None for --n)
def _plan(args) -> list[tuple[str, int]]:
    n = args.n
    return [('write_bag', n), ('video', n), ('extract', n), ('index', args.index_rows), ('sort', 10 * n), ('group', 15 * n),
            ('plan', 5 * n), ('plan_files', n), ('flow', n // 2), ('teacher', 100)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=2000, help='N frames (10 N is the large run)')
    ap.add_argument('--index-rows', type=int, default=100_000, help='N rows of index.csv')
    ap.add_argument('--case', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:       # the child: one case, its numbers as JSON
        with tempfile.TemporaryDirectory(prefix='vidseg_bench_scale_') as tmp:
            out = case(args.case, args.n, Path(tmp))
        out['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    print(f'{os.cpu_count()} CPU cores (shared machine); frames {W}x{H}\n')
    print('| operation | N | time at N (s) | time at 10 N (s) | ratio | peak MB at N | at 10 N |')
    print('|---|---|---|---|---|---|---|')
    for name, n in _plan(args):
        runs = []
        for size in (n, 10 * n):
            res = subprocess.run([sys.executable, __file__, '--case', name, '--n', str(size)], env=env,
                                 capture_output=True, text=True)
            if res.returncode:
                sys.exit(f'{name} {size}: {res.stderr[-2000:]}')
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        for label in [k for k in runs[0] if k not in ('peak_mb', 'traced_mb')]:
            small, large = runs[0][label], runs[1][label]
            mem = 'traced_mb' if 'traced_mb' in runs[0] else 'peak_mb'
            print(f'| {label} | {n} | {small:.3f} | {large:.3f} | {large / max(small, 1e-9):.1f} | '
                  f'{runs[0][mem]:.1f} | {runs[1][mem]:.1f} |', flush=True)


if __name__ == '__main__':
    main()
