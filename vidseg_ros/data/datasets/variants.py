"""Training-set variants for the all-frames protocol ("is video pertinent for single-image nets?").

The question is whether labelled video frames are worth more than the same number of
augmented copies of fewer frames. The variants, built from one labelled (or propagated) source:

* ``per_sequence`` with n = 1, 20 or 0 (= all): n frames per sequence, evenly spaced;
* ``strided`` (1-by-20): ``count`` frames taking every ``stride``-th frame;
* ``successive``: ``count`` consecutive frames (same count, far less diversity);
* ``noise``: ``copies`` noisy copies of each frame of ``per_sequence`` n = 1. The Gaussian
  noise's variance is measured between successive real frames, so a copy differs from its
  original about as much as the next video frame does; the result is rounded to 8 bit.

Selection variants return :class:`FrameSource` objects that reference the original files (no
copy); ``write_variant`` stores any variant as a dataset folder (``index.csv`` + ``dataset.yaml``).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidseg_ros.data.executors import task_executor
from vidseg_ros.data.images import read_rgb, write_image_atomic
from vidseg_ros.data.datasets.layouts import FrameSource, check_new_output, write_index, write_meta
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.data.video import check_frame_sizes

log = logging.getLogger(__name__)
VARIANTS = ('per_sequence', 'strided', 'successive', 'noise')
# Why a measured sigma of 0 is refused where copies are made (measuring it, as `vidseg noise-sigma` does, is fine).
STILL = ('successive frames are identical (noise sigma 0, e.g. a still video), so the noise copies would be exact '
         'duplicates of their frame')


def evenly_spaced(records: list, n: int) -> list:
    """``n`` of ``records`` evenly spaced (the middle one for n = 1); n <= 0 or n >= len keeps all.

    The one frames-per-video selection: ``per_sequence`` here and ``frames_per_video`` in training.
    """
    if n <= 0 or n >= len(records):
        return list(records)
    if n == 1:
        return [records[len(records) // 2]]
    idx = np.linspace(0, len(records) - 1, n).round().astype(int)
    return [records[i] for i in sorted(set(idx.tolist()))]


def per_sequence(source: FrameSource, n: int) -> FrameSource:
    """``n`` labelled frames per sequence, evenly spaced (middle frame for n = 1); n = 0 keeps all."""
    picked = []
    for recs in source.sequences().values():
        picked += evenly_spaced([r for r in recs if r.label is not None], n)
    return source.subset(picked)


def strided(source: FrameSource, count: int, stride: int = 20, offset: int = 0) -> FrameSource:
    """``count`` labelled frames taking every ``stride``-th one, sequence after sequence."""
    picked = []
    for recs in source.sequences().values():
        recs = [r for r in recs if r.label is not None]
        picked += recs[offset::stride]
        if len(picked) >= count:
            break
    if len(picked) < count:
        log.warning('strided: only %d frames at stride %d (asked %d)', len(picked), stride, count)
    return source.subset(picked[:count])


def successive(source: FrameSource, count: int, offset: int = 0) -> FrameSource:
    """``count`` consecutive labelled frames (continuing into the next sequence if needed)."""
    flat = [r for recs in source.sequences().values() for r in recs if r.label is not None]
    if len(flat) < count:
        log.warning('successive: only %d labelled frames (asked %d)', len(flat), count)
    return source.subset(flat[offset:offset + count])


def measure_noise_sigma(source: FrameSource, max_pairs: int = 50) -> float:
    """Std (0..255 units) of the pixel difference between successive frames of the sequences.

    Uses the closest frame pairs the source has (index difference 1 for video; CamVid val, labelled
    every 2nd frame, gives 2 and a log line says so), up to ``max_pairs`` spread over the sequences;
    a pair of frames of different sizes is skipped. ValueError when no pair can be compared (no
    sequence of two frames, or every pair differs in size): there is no sigma to measure.
    """
    steps = [b.index - a.index for recs in source.sequences().values() for a, b in zip(recs, recs[1:])]
    steps = [d for d in steps if d > 0]
    if not steps:
        raise ValueError(f'{source.name}: no sequence has two frames to measure the frame-to-frame noise '
                         'between; use a source whose sequences hold successive video frames (the full '
                         'videos, not a variant of single frames), or give make-variant --sigma')
    step = min(steps)
    if step > 1:
        log.info('%s: closest frames are %d apart; noise sigma measured at that step', source.name, step)
    pairs = [(a, b) for recs in source.sequences().values() for a, b in zip(recs, recs[1:])
             if b.index - a.index == step]
    picked = sorted(set(np.linspace(0, len(pairs) - 1, min(max_pairs, len(pairs))).round().astype(int).tolist()))
    rest = sorted(set(range(len(pairs))) - set(picked))
    sq, n, compared, skipped = 0.0, 0, 0, 0
    for k, i in enumerate(picked + rest):   # the rest only while no picked pair had two frames of one size
        if compared and k >= len(picked):
            break
        a, b = (read_rgb(r.image).astype(np.float32) for r in pairs[i])
        if a.shape != b.shape:      # frames of two sizes (a camera that changed mode): no pixel difference
            skipped += 1
            continue
        d = b - a
        sq += float(np.sum((d - d.mean()) ** 2))
        n += d.size
        compared += 1
    if not compared:      # sqrt(0) would be sigma 0: "noise" copies identical to their original
        raise ValueError(f'{source.name}: no two successive frames have the same size ({skipped} pair(s) of '
                         'frames of different sizes), so there is no frame-to-frame noise to measure; use a source '
                         'whose sequences hold successive video frames of one size, or give make-variant --sigma')
    if skipped:
        log.info('%s: %d frame pair(s) of different sizes skipped; noise sigma from %d pair(s)', source.name,
                 skipped, compared)
    return float(np.sqrt(sq / n))


def add_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of std ``sigma`` (0..255 units), rounded and clipped back to uint8."""
    noisy = rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def noise_copies(source: FrameSource, out: str | Path, copies: int, sigma: float | None = None,
                 seed: int = 0, executor: str = 'local', workers: int = 1, address: str = '') -> FrameSource:
    """``copies`` noisy versions of each frame of ``source`` written under ``out/images``.

    Args:
        source: the frames to copy (typically ``per_sequence(src, 1)``).
        out: dataset folder for the new images; labels are shared with the originals.
        copies: copies per frame (copy 0 is the original itself, unchanged).
        sigma: noise std in 0..255 units, above 0: ``measure_noise_sigma`` of the full video (None is refused:
            ``source``, one frame a sequence, has no successive frames to measure it on).
        executor, workers, address: where the per-frame tasks run (``data.executors``); each frame's
            noise is seeded by (seed, frame number), so the files are the same wherever they ran.
    """
    if sigma is None:
        raise ValueError('noise_copies needs sigma; measure it on the full video with '
                         'measure_noise_sigma(full_source)')
    if not sigma > 0:      # sigma 0 "noise" copies are exact duplicates of their frame
        raise ValueError(f'noise sigma {sigma} must be above 0: copies with no noise are exact duplicates of their '
                         'frame; give make-variant --sigma S (e.g. 3), or use another variant')
    out = Path(out)
    recs, tasks = [], []
    for i, rec in enumerate(source.records):
        seq = f'{rec.sequence}_{rec.index}_noise'
        paths = [out / 'images' / seq / f'{k:05d}.png' for k in range(copies)]
        # absolute: a Dask worker's current folder is its own (a relative path read and wrote there, at --address)
        tasks.append((os.path.abspath(rec.image), [os.path.abspath(p) for p in paths], sigma, (seed, i)))
        # Each copy its own "sequence" of distinct indices: no fake temporal neighbours.
        recs += [replace(rec, sequence=f'{seq}{k:05d}', index=0, image=path) for k, path in enumerate(paths)]
    made = not (out / 'images').exists()
    try:
        with task_executor(executor, workers, address, tasks=len(tasks)) as pool:
            list(pool.map(_write_noise_copies, tasks) if pool else map(_write_noise_copies, tasks))
    except BaseException:      # a full disk, Ctrl-C: no half set of copies left (only a folder this run made)
        if made:
            shutil.rmtree(out / 'images', ignore_errors=True)
        raise
    return replace(source, records=recs, name=f'{source.name}-noise{copies}',
                   extra={**source.extra, 'noise_sigma': sigma})


def _write_noise_copies(task: tuple) -> None:
    """One frame's copies (a task): copy 0 unchanged, the others with seeded Gaussian noise."""
    image, paths, sigma, seed = task
    rgb = read_rgb(image)
    rng = np.random.default_rng(seed)
    for k, path in enumerate(map(Path, paths)):
        path.parent.mkdir(parents=True, exist_ok=True)
        img = rgb if k == 0 else add_noise(rgb, sigma, rng)
        write_image_atomic(path, img[:, :, ::-1])    # a full disk is an OSError, not a truncated copy


def make_variant(source: FrameSource, kind: str, *, n: int = 1, count: int = 400, stride: int = 20,
                 copies: int = 20, sigma: float | None = None, out: str | Path | None = None,
                 seed: int = 0, executor: str = 'local', workers: int = 1, address: str = '') -> FrameSource:
    """One variant by name (see module doc); ``noise`` needs ``out`` for its images.

    ``out``, the folder the variant goes to, must be new: not the source's, nor one holding a dataset.
    """
    if not any(r.label is not None for r in source.records):
        raise ValueError(f'{source.name}: no labelled frames to build a variant from '
                         '(add labels with `vidseg label-import` / `vidseg propagate`)')
    files = [p for r in source.records for p in (r.image, r.label)] if out is not None else []
    if out is not None:
        check_new_output(out, source_files=files)
    # the name is what the variant's dataset.yaml records as ``variant``: a selection kept its source's name, so
    # per_sequence, strided and successive variants of one source all read 'variant: davis'
    if kind == 'per_sequence':
        return replace(per_sequence(source, n), name=f'{source.name}-per_sequence{n}')
    if kind == 'strided':
        return replace(strided(source, count, stride), name=f'{source.name}-strided{stride}')
    if kind == 'successive':
        return replace(successive(source, count), name=f'{source.name}-successive')
    if kind == 'noise':
        if out is None:
            raise ValueError('the noise variant writes images: give an output folder')
        if sigma is None:
            check_frame_sizes(source.records, labels=False)     # from the headers, before any is decoded
            sigma = measure_noise_sigma(source)
            if sigma == 0:
                raise ValueError(f'{source.name}: {STILL}; give make-variant --sigma S (e.g. 3), or use another '
                                 'variant')
            log.info('noise variant: sigma %.2f (0..255) measured between successive frames', sigma)
        with dataset_lock(out, create=True):    # one writer at a time; the check again, under the lock
            check_new_output(out, source_files=files)
            return noise_copies(per_sequence(source, n), out, copies, sigma, seed, executor, workers, address)
    raise ValueError(f'unknown variant {kind!r}; valid: {", ".join(VARIANTS)}')


def write_variant(variant: FrameSource, out: str | Path) -> Path:
    """Store a variant as a dataset folder that ``extracted_source`` / ``vidseg train`` read; ``out`` must not
    hold a dataset yet.

    Images are referenced in place; labels too when they already hold class ids, otherwise
    (DAVIS 0/255 masks, for example) converted copies are written under ``out/labels``.
    """
    with dataset_lock(out, create=True):    # of two make-variants into one new folder, the second is refused
        check_new_output(out)
        return _write_variant(variant, Path(out))


def referenced(path: str | Path, out: Path) -> Path:
    """``path`` as the index of the dataset at ``out`` (resolved) should store it: relative to ``out``, with
    ``..`` for a file outside it (``out/../src/images/a/0.png``; ``write_index`` keeps what lies under ``out``
    relative). A variant stored its source's frames as absolute paths, so moving or copying the source and
    the variant together (a disk, a backup) broke the variant. An index of an older version, holding
    absolute paths, still reads. Absolute only where no relative path exists (another Windows drive)."""
    path = Path(path).resolve()
    try:
        return out / os.path.relpath(path, out)
    except ValueError:
        return path


def _write_variant(variant: FrameSource, out: Path) -> Path:
    """``write_variant`` once ``out`` is locked. Paths are resolved, and ``out`` too, and stored relative to
    ``out`` (``referenced``): the files inside it (noise copies, converted labels) and the source's frames, so
    the variant moves with its source (a relative ``out`` stored the copies absolute, and a moved variant lost
    them)."""
    out = out.resolve()
    check_frame_sizes(variant.records)      # from the headers, before a label is converted (and train decodes them)
    from vidseg_ros.data.datasets.labels import write_label
    from vidseg_ros.data.datasets.layouts import identity_lut
    plain = variant.label_lut is None or np.array_equal(
        variant.label_lut, identity_lut(variant.ignore_index, variant.num_classes))
    recs = []
    for r in variant.records:
        label = referenced(r.label, out) if r.label else None
        if label is not None and not plain:
            label = write_label(out / 'labels' / r.sequence / f'{r.stamp_ns}_{r.index}.png',
                                variant.read_label(r))
        recs.append(replace(r, image=referenced(r.image, out), label=label))
    write_index(out, recs)
    meta = {'classes': variant.class_names, 'ignore_index': variant.ignore_index, 'fps': variant.fps,
            'variant': variant.name}
    if 'noise_sigma' in variant.extra:
        meta['noise_sigma'] = round(float(variant.extra['noise_sigma']), 3)
    write_meta(out, meta)
    return out / 'index.csv'
