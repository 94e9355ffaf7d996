"""Pack CamVid's training split small enough to travel to a GPU machine with the working tree (64 MiB).

The lossless WebP frames of ``train/`` are 63 MB; re-encoded as JPEG (quality 95 by default) they are
about 25 MB, and the label PNGs (3 MB) are copied byte for byte. Only the training split travels (the
selection drive 0006R0 is part of it); val is scored back here on the original lossless frames with
``vidseg eval``, so the reported number never sees a re-encoded pixel. The output folder must be
git-ignored (``runs/`` is) and named in the device call's ``carry``; never commit it (CC BY-NC data).

    python bench/pack_camvid_gpu.py ../shared/data/camvid runs/gpu_data/camvid [--quality 95]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2


def pack(src: Path, dst: Path, quality: int = 95, split: str = 'train') -> int:
    """Write ``dst/<split>/*.jpg`` and ``dst/<split>annot/*.png``; returns the bytes written."""
    (dst / split).mkdir(parents=True, exist_ok=True)
    (dst / f'{split}annot').mkdir(parents=True, exist_ok=True)
    total = 0
    for img in sorted((src / split).iterdir()):
        bgr = cv2.imread(str(img), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f'cannot read {img}')
        out = dst / split / f'{img.stem}.jpg'
        cv2.imwrite(str(out), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lab = src / f'{split}annot' / f'{img.stem}.png'
        shutil.copyfile(lab, dst / f'{split}annot' / lab.name)
        total += out.stat().st_size + lab.stat().st_size
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', type=Path, help='CamVid root (train/, trainannot/)')
    p.add_argument('dst', type=Path, help='git-ignored output folder, e.g. runs/gpu_data/camvid')
    p.add_argument('--quality', type=int, default=95)
    args = p.parse_args()
    if not (args.src / 'train').is_dir():
        print(f'error: {args.src}/train not found', file=sys.stderr)
        return 2
    print(f'{pack(args.src, args.dst, args.quality) / 2**20:.1f} MiB in {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
