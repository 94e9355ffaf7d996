"""A bag the dataset already holds, found again at another path (moved, renamed, or copied with the dataset).

The index names each frame's bag by its absolute path, which is how a re-run finds the frames it has. A bag moved
with its dataset (``mv drive_day parent2``) or renamed came back as a bag never seen: another bag of that name was in
the dataset, so it got a ``<name>-<hash>`` name and every frame was written a second time (6 frames became 12, exit
0). A name alone cannot tell it is the same bag: the second day's ``drive`` must stay apart. So it is known by its
content: every frame the dataset has of the old bag is in the new one (same topic, same stamp to the nanosecond) and
a few of them, decoded, are the very pixels of the files (stamps alone match between two sim-time recordings).
An older index names a bag by a path relative to the folder of its run: from another folder, that bag is known the
same way (it was known by its name, and another day's ``drive`` was taken for it).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.data.bags.reader import IMAGE_TYPES, list_topics, read_messages
from vidseg_ros.data.datasets.extract_config import ExtractConfig
from vidseg_ros.data.datasets.image_messages import decode_message, header_stamp_ns
from vidseg_ros.data.datasets.layouts import FrameRecord
from vidseg_ros.data.datasets.sequence_names import _bag_stem as bag_stem, bag_key, rows_by_bag
from vidseg_ros.data.images import read_rgb

log = logging.getLogger(__package__ + '.extract')     # messages of `vidseg extract`, under its name
SAMPLES = 3             # frames of an old bag compared pixel by pixel: its first, middle and last
# A JPEG file holds the frame encoded again: exactly as this run encodes it when its --jpeg-quality is the same;
# encoded at another, a CamVid frame differs from its source by 1.6 levels on average at quality 95, 4.2 at 50 and
# 5.0 at 30 (noise by tens: not known then, extracted as a new bag); CamVid frames 1 s apart differ by 10 to 13.
JPEG_MEAN_ABS_DIFF = 6.0


def moved_bags(bags: list[Path], old_rows, cfg: ExtractConfig) -> dict[str, Path]:
    """-> {an old bag's real path: the bag of ``bags`` that is the same bag}, for bags the dataset does not know
    by their path. Old bags looked at: those at a path that is gone (or, named by a relative path, not found from
    here), and those of the same name (a dataset copied with its bag); only where some frame file of theirs exists
    (nothing else could be written twice)."""
    groups = rows_by_bag(old_rows)
    # bags named by a path relative to the folder of their run (older datasets)
    relative = {key for key, rows in groups.items() if any(not os.path.isabs(r.bag) for r in rows)}
    new = [b for b in bags if bag_key(b) not in groups]
    run = {bag_key(b) for b in bags}
    olds = {k: rows for k, rows in groups.items() if k not in run and any(Path(r.image).is_file() for r in rows)} \
        if new else {}
    names = {k: {Path(k).name, bag_stem(k)} for k in olds}
    found: dict[str, Path] = {}
    for bag in new:
        if not olds:
            break
        plain = bag_stem(bag) if bag.is_file() else bag.name
        # a gone one of another name: renamed; the same name first, then by path, so the choice is the same every run
        cands = sorted((k for k in olds if plain in names[k] or not os.path.exists(k)),
                       key=lambda k: (plain not in names[k], k))
        cands = _listed_in(bag, cands, olds)
        if (same := _same_bag(bag, cands, olds, cfg)) is not None:
            found[same] = bag
            rows = olds.pop(same)
            if same in relative:    # (its old words, which say why the index named it so)
                log.warning('extract: %s is taken for the bag %s already in the dataset (its index names that bag by '
                            'a path relative to another folder; the same frames): frames already there are skipped',
                            str(bag)[:200], rows[0].bag[:200])
            else:
                log.info('extract: %s is the bag %s already in this dataset (the same frames: moved, renamed or '
                         'copied): its frames there are kept, not written again, and the index names it by its new '
                         'path', str(bag)[:200], same[:200])
    return found


def _listed_in(bag: Path, cands: list[str], olds: dict[str, list[FrameRecord]]) -> list[str]:
    """The candidates whose topics the bag has, with at least as many messages as they have frames (from the
    bag's index: not read)."""
    listed = list_topics(bag, salvage=False) if cands else None
    if listed is None:
        return cands
    keep = []
    for k in cands:
        counts: dict[str, int] = {}
        for r in olds[k]:
            counts[r.topic] = counts.get(r.topic, 0) + 1
        if all(t in listed and listed[t][1] >= n for t, n in counts.items()):
            keep.append(k)
    return keep


def _same_bag(bag: Path, cands: list[str], olds: dict[str, list[FrameRecord]], cfg: ExtractConfig) -> str | None:
    """The first candidate all of whose frames ``bag`` has, with the pixels of its sampled files; None if none."""
    if not cands:
        return None
    samples = {k: _samples(olds[k]) for k in cands}
    wanted: dict[tuple[str, int], list[Path]] = {}     # (topic, stamp) -> the sampled files of that frame
    for rows in samples.values():
        for r in rows:
            wanted.setdefault((r.topic, r.stamp_ns), []).append(r.image)
    topics = sorted({r.topic for k in cands for r in olds[k]})
    stamps: set[tuple[str, int]] = set()
    same: set[Path] = set()     # the sampled files whose frame this bag has
    try:
        for msg in read_messages(bag, topics, warnings=[]):
            if msg.msgtype not in IMAGE_TYPES:
                continue
            stamp = (header_stamp_ns(msg) if cfg.stamp == 'header' else 0) or msg.log_time_ns
            if (msg.topic, stamp) in wanted and (msg.topic, stamp) not in stamps:
                # compared as read: one frame in memory, however many candidates' samples share its stamp
                same.update(_same_frames(msg, wanted[(msg.topic, stamp)], cfg.jpeg_quality))
            stamps.add((msg.topic, stamp))
    except Exception:  # noqa: BLE001 - a bag that fails to read is not known; its extract reports why, after the
        return None     # bags before it are extracted (failing here stopped them all)
    for k in cands:
        if all((r.topic, r.stamp_ns) in stamps for r in olds[k]) and all(r.image in same for r in samples[k]):
            return k
    return None


def _samples(rows: list[FrameRecord]) -> list[FrameRecord]:
    """Up to ``SAMPLES`` rows whose file exists, spread over the bag: the first, the middle, the last by stamp."""
    have = sorted((r for r in rows if Path(r.image).is_file()), key=lambda r: (r.stamp_ns, r.topic))
    if len(have) <= SAMPLES:
        return have
    return [have[round(i * (len(have) - 1) / (SAMPLES - 1))] for i in range(SAMPLES)]


def _same_frames(msg, images: list[Path], quality: int) -> list[Path]:
    """The files of ``images`` that hold the frame of ``msg`` (exactly, or as a JPEG of it; ``quality``: this
    run's)."""
    try:
        rgb = decode_message(msg)[0]
    except Exception:  # noqa: BLE001 - a damaged message (rosbags' errors, ImageError) is no frame of the dataset
        return []
    return [image for image in images if _same_pixels(rgb, image, quality)]


def _same_pixels(rgb: np.ndarray, image: Path, quality: int) -> bool:
    """Whether file ``image`` holds the frame ``rgb``."""
    try:
        file = read_rgb(image)
    except Exception:  # noqa: BLE001 - a damaged file (ImageError, OSError) is not the frame
        return False
    if rgb.shape != file.shape:
        return False
    if np.array_equal(rgb, file):
        return True
    if image.suffix.lower() not in ('.jpg', '.jpeg'):
        return False
    ok, data = cv2.imencode('.jpg', np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok and np.array_equal(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1], file):    # as write_job encodes it
        return True
    return float(np.abs(rgb.astype(np.int16) - file).mean()) <= JPEG_MEAN_ABS_DIFF
