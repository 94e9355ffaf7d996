"""``vidseg propagate`` on a whole extracted dataset: every frame labelled from the human ones.

Sequences are cut into independent jobs at human-labelled frames (a frame between two labels only
needs those two), so long recordings spread over worker processes. Flow and tracker need one frame
size: a sequence whose frames change size (a dataset not made by ``extract``, which starts a new
sequence there) is propagated as separate parts, each from its own human labels, with a warning
naming the frame where the size changes. Each job reads its frames lazily, propagates, and writes
each label as it is made (where the job runs: a job held every label of its stretch before, 9.4 MB
a frame at 320x240 and 12 classes, and a teacher job is a whole sequence), returning only their
names; the main process keeps the index. Human labels are never touched; each new label records
its source (``propagated`` / ``teacher``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidseg_ros.data.executors import task_executor
from vidseg_ros.data.video import check_frame_sizes
from vidseg_ros.data.image_headers import file_image_hw, sizes_read_once
from vidseg_ros.data.images import ImageError, clip, read_rgb
from vidseg_ros.data.datasets.labels import same_class_names, write_label
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.data.labelling.propagate import Predict, PropagateConfig, propagate_sequence
from vidseg_ros.data.datasets.layouts import (INDEX_NAME, META_NAME, FrameRecord, extracted_source, read_index,
                                              read_label_file, read_meta, write_index, write_meta)

log = logging.getLogger(__name__)


class LazyFrames(Sequence):
    """Frames of one sequence read on demand (a few kept), so long sequences fit in memory."""

    def __init__(self, paths: list, keep: int = 8):
        self.paths, self.keep, self._cache = list(paths), keep, {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._cache:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = read_rgb(self.paths[i])
        return self._cache[i]


def split_jobs(n: int, labelled: list[int], labels_per_job: int = 4) -> list[tuple[int, int]]:
    """Frame ranges [lo, hi] (inclusive) that can be propagated independently.

    Inner boundaries sit on labelled frames (shared by both neighbours), so every unlabelled frame
    falls in exactly one range together with the labels before and after it.
    """
    keys = sorted(labelled)
    if not keys:
        return [(0, n - 1)] if n else []
    cuts = keys[::max(1, labels_per_job)]
    if cuts[-1] != keys[-1]:
        cuts.append(keys[-1])
    bounds = [0] + cuts[1:-1] + [n - 1] if len(cuts) > 2 else [0, n - 1]
    return list(zip(bounds, bounds[1:])) if len(bounds) > 1 else [(0, n - 1)]


def _job(args) -> list[tuple[int, str | None, str, int, int]]:
    """One stretch: (position, label file written or None where the frame keeps its label, source, ignore pixels,
    pixels) of each frame it labels; ``targets`` names the file of each frame to write."""
    return list(_job_items(args))


def _job_items(args) -> Iterator[tuple[int, str | None, str, int, int]]:
    """``_job``'s items, each as its label is written: run in this process (the teacher, one worker), each is
    indexed as it comes."""
    # labels travel as file names and are read where the job runs: a job's arguments stay small (a Dask
    # graph, a process pool's pipe) and the driver never holds every human label of the dataset at once
    paths, label_paths, lut, num_classes, cfg, predict, targets, spill_dir = args
    if cfg.method == 'teacher':
        # frames are independent: only those to label are predicted (a run resumed after a stop predicted every
        # frame of the sequence again), and the labelled ones are skipped by position, their pixels unread (a
        # teacher job is a whole sequence: it held every human label of it, 41 MB for 1000 frames at 320x240
        # labelled every 2nd, 6.6 for 100)
        for i in range(len(paths)):
            if i not in targets and i not in label_paths:
                yield i, None, 'teacher', 0, 0      # keeps the label an earlier run gave it
        labels = {i: None for i in range(len(paths)) if i not in targets}
    else:
        labels = {i: read_label_file(p, lut) for i, p in label_paths.items()}
    for i, prop in propagate_sequence(LazyFrames(paths), labels, num_classes, cfg, predict, stream=True,
                                      spill_dir=spill_dir):
        target = targets.get(i)
        if target is None:
            yield i, None, prop.source, 0, 0
            continue
        write_label(target, prop.label)
        yield i, target, prop.source, int((prop.label == cfg.ignore_index).sum()), prop.label.size


def propagate_dataset(root, cfg: PropagateConfig | None = None, predict: Predict | None = None,
                      progress: Callable[[int], None] | None = None, overwrite: bool = False,
                      workers: int = 1, executor: str = 'local', address: str = '',
                      out: str | Path | None = None) -> dict:
    """Labels for every frame of the dataset at ``root`` (or of a new dataset at ``out``).

    Returns counts per label source written now and in total (``total_<source>``), and
    ``ignored_percent``, the share of ignore pixels in the labels written now.

    Args:
        root: dataset folder (``index.csv``, ``dataset.yaml`` naming the classes and the ignore
            value, which replaces ``cfg.ignore_index``: CamVid-style datasets use 11, not 255).
        cfg: method and its settings.
        predict: the teacher model (method ``teacher``), ``predict(rgb) -> (ids, confidence)``; its
            ``classes`` attribute, when set, must name the dataset's classes (else nothing is written).
        progress: called with the number of frames done (adds up to the frames in the index).
        overwrite: redo frames that already carry a propagated/teacher label.
        workers: processes for flow/tracker jobs (the teacher runs in this process).
        executor: ``local`` (a process pool of ``workers``) or ``dask`` (a Dask cluster at ``address``,
            or a local one of ``workers`` processes); see ``data.executors``. The labels are the same.
        out: a new folder (not inside ``root``, not holding a dataset) for a dataset of ``root``'s frames
            and labels, referenced relative to it, plus the new labels; ``root`` is left unchanged. None:
            the labels go into ``root``.
    """
    # a Dask job names its files to the worker, whose current folder is its own: with a relative DATASET a
    # scheduler's worker (--address) found no label ('cannot read label file ds/labels/...'), or wrote elsewhere
    where = os.path.abspath if executor == 'dask' else str
    root = Path(where(root))
    if out is not None:
        return _propagate_into(root, Path(where(out)), cfg, predict, progress, overwrite, workers, executor, address)
    with dataset_lock(root):    # two writers at once: the one ending last dropped the other's labels from the index
        return _propagate_locked(root, cfg, predict, progress, overwrite, workers, executor, address)


def _propagate_into(root: Path, out: Path, cfg, predict, progress, overwrite: bool, workers: int, executor: str,
                    address: str) -> dict:
    """``propagate_dataset`` with ``out``: the source's index and dataset.yaml copied to ``out`` (paths relative to
    it, as a variant's), then propagated there. A failure before any label was written leaves no dataset in
    ``out``; an interrupted run leaves ``out`` indexed with the labels written so far (``vidseg propagate OUT``
    continues it)."""
    from vidseg_ros.data.datasets.layouts import check_new_output
    from vidseg_ros.data.datasets.variants import referenced
    with dataset_lock(root):        # the source's index stays as read while it is copied
        records = read_index(root)
        files = [p for r in records for p in (r.image, r.label) if p is not None]
        check_new_output(out, root, files, what='the dataset')
        with dataset_lock(out, create=True, what='output folder'):
            check_new_output(out, root, files, what='the dataset')     # again, under its lock
            home = out.resolve()
            write_index(out, [replace(r, image=referenced(r.image, home),
                                      label=referenced(r.label, home) if r.label is not None else None)
                              for r in records])
            write_meta(out, read_meta(root))
            try:
                counts = _propagate_locked(out, cfg, predict, progress, overwrite, workers, executor, address)
            except BaseException:
                if not (out / 'labels').exists():    # nothing of this run to keep: no dataset left behind
                    for name in (INDEX_NAME, META_NAME):
                        (out / name).unlink(missing_ok=True)
                raise
    return {'out': str(out), **counts}


def _propagate_locked(root: Path, cfg: PropagateConfig | None, predict: Predict | None, progress, overwrite: bool,
                      workers: int, executor: str, address: str) -> dict:
    """``propagate_dataset`` once ``root`` is locked."""
    src = extracted_source(root)
    cfg = replace(cfg or PropagateConfig(), ignore_index=src.ignore_index)
    # the pixel-limit check and the frame sizes the parts are cut at read each frame's header once (twice before)
    with sizes_read_once():
        check_frame_sizes(src.records)      # from the headers, before a job decodes a frame or a label
        for stale in root.glob('.vidseg-propagate-*'):     # spilled by a run that was killed (this one holds the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if cfg.method == 'teacher':
            _check_teacher_classes(getattr(predict, 'classes', None), src.class_names)
        jobs, skipped, unlabelled = _plan_jobs(src, cfg, predict)
    records = {r.image: r for r in src.records}
    counts: dict[str, int] = {}
    num_classes = src.num_classes or _classes_in_labels(src, cfg.ignore_index)
    # where the flow spans of a job put aside what they keep for their second pass past a budget (propagate.Spill):
    # the dataset's own disk, as the labels, seen by every worker, not a /tmp that may be memory
    spill_dir = str(root)
    jobs = [(recs, new, (paths, labels, src.label_lut, num_classes, cfg, pred,
                         _targets(root, recs, records, overwrite), spill_dir))
            for recs, new, (paths, labels, cfg, pred) in jobs]
    if not jobs:
        raise ValueError(f'{root}: no human-labelled frame to propagate from; import a few labels with '
                         '`vidseg label-import` first')
    if unlabelled:   # after the check above: where nothing can run, the error alone says it
        log.warning('%d sequence(s) without a human label skipped: %s', len(unlabelled),
                    ', '.join(unlabelled)[:300])
    if progress and skipped:
        progress(skipped)
    if not overwrite:   # a job whose every other frame kept its label would compute flows only to keep them
        jobs = _without_finished_jobs(jobs, records, counts, progress)
    stack = contextlib.ExitStack()   # the teacher model runs in this process, flow/tracker jobs anywhere
    pool = None if cfg.method == 'teacher' else stack.enter_context(
        task_executor(executor, workers, address, tasks=len(jobs)))
    futures, stored = [], 0
    try:
        futures = [pool.submit(_job, a) for _, _, a in jobs] if pool else []
        for k, (recs, new, args) in enumerate(jobs):
            if futures:
                _store_job(recs, futures[k].result(), records, counts)
            else:
                # in this process: each frame indexed (and shown) as it is made, so a stop keeps what was done (a
                # teacher job is a whole sequence: stopped at its last frame, its labels were all unindexed, the bar
                # had stood at 0 for the whole drive, and the next run did it all again)
                made = 0
                for item in _job_items(args):
                    _store_job(recs, [item], records, counts)
                    made += 1
                    if progress:
                        progress(1)
                new = max(0, new - made)    # what the job did not label (human, out of reach): counted at its end
            stored = k + 1
            # indexed: the job's result and arguments go (every job's were held to the end of the run, a few
            # hundred bytes a frame; on a Dask cluster, the results in its workers' memory too)
            jobs[k] = None
            if futures:
                futures[k] = None
            if progress and new:
                progress(new)
    except BaseException as e:
        # a job failed (an unreadable frame, a full disk): the other jobs handed out finish and are indexed, then
        # the first error is raised (they ran on, their labels written but not indexed and done again by the next
        # run: 177 labels of one sequence for an unreadable frame in the other's job). Ctrl-C: those done are kept.
        finish = isinstance(e, Exception)
        for (recs, _, _), fut in list(zip(jobs, futures))[stored:]:
            if (finish or fut.done()) and not fut.cancelled() and fut.exception() is None:
                _store_job(recs, fut.result(), records, counts)
        raise
    finally:
        for fut in futures:     # the jobs not run: they end before the executor (a cluster's outlive it)
            if fut is not None:
                fut.cancel()
        try:    # the executor sees the error: on Ctrl-C it stops its workers now, not after their running jobs
            stack.__exit__(*sys.exc_info())
        finally:
            write_index(root, list(records.values()))     # labels written so far stay indexed
    for r in records.values():
        counts['total_' + r.label_source] = counts.get('total_' + r.label_source, 0) + 1
    written = counts.pop('_px', 0)
    if written:     # the share of holes (min_confidence) in the labels just written
        counts['ignored_percent'] = round(100 * counts.pop('_ignored_px') / written, 1)
    elif counts.get('kept_existing'):   # e.g. a tracker run after a flow run: it wrote nothing, exit 0, silently
        log.warning('%s: nothing %s: the %d frame(s) it labels already carry a propagated or teacher label, kept; '
                    '--overwrite redoes them', clip(root), 'taught' if cfg.method == 'teacher' else 'propagated',
                    counts['kept_existing'])
    return counts


def _plan_jobs(src, cfg: PropagateConfig, predict) -> tuple[list, int, list[str]]:
    """The jobs of a run (frames, frames new to the count, arguments), the frames skipped, and the sequences without
    a human label."""
    jobs, skipped, seen, unlabelled = [], 0, set(), []
    for seq, whole in src.sequences().items():
        if cfg.method != 'teacher' and not any(r.label_source == 'human' for r in whole):
            unlabelled.append(seq)
            skipped += len(whole)
            continue
        # flow and tracker follow pixels from frame to frame: one frame size per part
        for recs in [whole] if cfg.method == 'teacher' else _same_size_parts(seq, whole):
            human = [i for i, r in enumerate(recs) if r.label_source == 'human']
            if not human and cfg.method != 'teacher':
                hw = _image_hw(recs[0].image)
                log.warning('%s: the %d frame(s)%s from %s on have no human label of their size: not propagated',
                            seq[:200], len(recs), f' of {hw[1]}x{hw[0]}' if hw else '', clip(recs[0].image, 300))
                skipped += len(recs)
                continue
            for lo, hi in split_jobs(len(recs), human) if cfg.method != 'teacher' else [(0, len(recs) - 1)]:
                # the job's own labels, found by bisection (human is sorted): a scan of all of them for each job
                # grew with jobs x labels (100k frames labelled every 2nd: 38 s planning, 0.5 s at 10k)
                labels = {i - lo: str(recs[i].label) for i in human[bisect_left(human, lo):bisect_right(human, hi)]}
                # neighbouring jobs share their boundary (labelled) frame: count each frame once
                new = sum(1 for r in recs[lo:hi + 1] if r.image not in seen)
                seen.update(r.image for r in recs[lo:hi + 1])
                jobs.append((recs[lo:hi + 1], new, ([r.image for r in recs[lo:hi + 1]], labels, cfg, predict)))
    return jobs, skipped, unlabelled


def _store_job(recs: list[FrameRecord], result: list, records: dict, counts: dict) -> None:
    """Index what one job wrote (``_job``'s result)."""
    for i, path, source, ignored, pixels in result:
        _store(recs[i], path, source, ignored, pixels, records, counts)


def _without_finished_jobs(jobs: list, records: dict, counts: dict, progress) -> list:
    """``jobs`` less those whose frames are all labelled already (human, or kept from an earlier run): such a
    job would only compute flows (or run the teacher) for labels ``_store`` keeps; counted as kept_existing."""
    todo = []
    for job in jobs:
        recs, new = job[0], job[1]
        current = [records[r.image] for r in recs]
        if any(c.label is None for c in current):
            todo.append(job)
            continue
        counts['kept_existing'] = counts.get('kept_existing', 0) + sum(c.label_source != 'human' for c in current)
        if progress:
            progress(new)
    return todo


def _image_hw(path) -> tuple[int, int] | None:
    """(height, width) of an image file as displayed, as ``read_rgb`` reads it (a phone photo turned by its EXIF
    orientation: photos of one stored size can differ here); None when unreadable (reading the frame then
    says why)."""
    try:
        return tuple(file_image_hw(path))
    except (OSError, ImageError):
        return None


def _same_size_parts(seq: str, recs: list[FrameRecord]) -> list[list[FrameRecord]]:
    """``recs`` cut where the frame size changes (flow cannot pair frames of two sizes), warning at each cut."""
    parts: list[list[FrameRecord]] = []
    last = None
    for rec in recs:
        hw = _image_hw(rec.image)
        if parts and hw is not None and last is not None and hw != last:
            log.warning('%s changes frame size at %s (index %d, %dx%d -> %dx%d): propagated as separate parts, '
                        'each from its own human labels', seq[:200], clip(rec.image, 300), rec.index,
                        last[1], last[0], hw[1], hw[0])
            parts.append([])
        if not parts:
            parts.append([])
        parts[-1].append(rec)
        last = hw or last
    return parts


def _check_teacher_classes(teacher: list[str] | None, dataset: list[str]) -> None:
    """Refuse a teacher for other classes: its ids would mean other things here (CamVid's 8, Car, in a
    3-class dataset). Names compare as ``same_class_names`` says (the training run's rule too)."""
    if teacher is None or not dataset:      # unknown: teacher_label still refuses ids beyond the classes
        return
    if not same_class_names(teacher, dataset):
        raise ValueError(f'the teacher model has {len(teacher)} classes ({clip(", ".join(teacher), 120)}), the '
                         f'dataset {len(dataset)} ({clip(", ".join(dataset), 120)}); use a model trained on '
                         "the dataset's classes")


def _classes_in_labels(src, ignore_index: int) -> int:
    """Class count when dataset.yaml names none: the largest human label value + 1 (at least 2)."""
    top = 1
    for r in src.records:
        if r.label_source == 'human':
            values = np.unique(src.read_label(r))
            values = values[values != ignore_index]
            top = max(top, int(values.max()) if values.size else 0)
    return top + 1


def _targets(root: Path, recs: list[FrameRecord], records: dict, overwrite: bool) -> dict[int, str]:
    """Position -> label file, of the frames of ``recs`` a job is to label: not human, and without a label unless
    ``overwrite``."""
    out = {}
    for i, rec in enumerate(recs):
        current = records[rec.image]
        if current.label_source != 'human' and (current.label is None or overwrite):
            out[i] = str(root / 'labels' / rec.sequence / f'{rec.stamp_ns}.png')
    return out


def _store(rec: FrameRecord, path: str | None, source: str, ignored: int, pixels: int, records: dict,
           counts: dict) -> None:
    """Index the label a job wrote for ``rec`` (``path``), or count the label it kept (None)."""
    current = records[rec.image]
    if current.label_source == 'human':
        return
    if path is None:
        counts['kept_existing'] = counts.get('kept_existing', 0) + 1
        return
    counts['_ignored_px'] = counts.get('_ignored_px', 0) + ignored
    counts['_px'] = counts.get('_px', 0) + pixels
    records[rec.image] = FrameRecord(rec.sequence, rec.index, rec.image, Path(path), rec.stamp_ns, source,
                                     rec.bag, rec.topic, rec.encoding)
    counts[source] = counts.get(source, 0) + 1
