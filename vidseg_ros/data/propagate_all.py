"""``vidseg propagate`` on a whole extracted dataset: every frame labelled from the human ones.

Sequences are cut into independent jobs at human-labelled frames (a frame between two labels only
needs those two), so long recordings spread over worker processes. Each job reads its frames
lazily, propagates, and returns the labels; the main process writes them and keeps the index.
Human labels are never touched; each new label records its source (``propagated`` / ``teacher``).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vidseg_ros.data.executors import task_executor
from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.labels import write_label
from vidseg_ros.data.propagate import Predict, PropagateConfig, Propagated, propagate_sequence
from vidseg_ros.data.records import FrameRecord, extracted_source, write_index

LOG = logging.getLogger(__name__)


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


def _job(args) -> dict[int, Propagated]:
    paths, labels, num_classes, cfg, predict = args
    return propagate_sequence(LazyFrames(paths), labels, num_classes, cfg, predict)


def propagate_dataset(root, cfg: PropagateConfig | None = None, predict: Predict | None = None,
                      progress: Callable[[int], None] | None = None, overwrite: bool = False,
                      workers: int = 1, executor: str = 'local', address: str = '') -> dict:
    """Labels for every frame of the dataset at ``root``; returns counts per label source.

    Args:
        root: dataset folder (``index.csv``, ``dataset.yaml`` naming the classes).
        cfg: method and its settings.
        predict: the teacher model (method ``teacher``), ``predict(rgb) -> (ids, confidence)``.
        progress: called with the number of frames of each finished job.
        overwrite: redo frames that already carry a propagated/teacher label.
        workers: processes for flow/tracker jobs (the teacher runs in this process).
        executor: ``local`` (a process pool of ``workers``) or ``dask`` (a Dask cluster at ``address``,
            or a local one of ``workers`` processes); see ``data.executors``. The labels are the same.
    """
    cfg = cfg or PropagateConfig()
    root = Path(root)
    src = extracted_source(root)
    num_classes = src.num_classes or 2
    records = {r.image: r for r in src.records}
    counts: dict[str, int] = {}
    jobs = []
    for seq, recs in src.sequences().items():
        human = [i for i, r in enumerate(recs) if r.label_source == 'human']
        if not human and cfg.method != 'teacher':
            LOG.warning('sequence %s has no human label; skipped', seq)
            continue
        for lo, hi in split_jobs(len(recs), human) if cfg.method != 'teacher' else [(0, len(recs) - 1)]:
            labels = {i - lo: src.read_label(recs[i]) for i in human if lo <= i <= hi}
            jobs.append((recs[lo:hi + 1], ([r.image for r in recs[lo:hi + 1]], labels, num_classes, cfg,
                                           predict)))
    stack = contextlib.ExitStack()   # the teacher model runs in this process, flow/tracker jobs anywhere
    pool = None if cfg.method == 'teacher' else stack.enter_context(task_executor(executor, workers, address))
    results = iter(())
    try:
        results = pool.map(_job, [a for _, a in jobs]) if pool else map(_job, [a for _, a in jobs])
        for (recs, _), result in zip(jobs, results):
            for i, prop in result.items():
                _store(root, recs[i], prop, records, counts, overwrite)
            if progress:
                progress(len(recs))
    finally:
        getattr(results, 'close', lambda: None)()   # a cluster's result stream ends before the cluster
        stack.close()
        write_index(root, list(records.values()))     # labels written so far stay indexed
    for r in records.values():
        counts['total_' + r.label_source] = counts.get('total_' + r.label_source, 0) + 1
    return counts


def _store(root: Path, rec: FrameRecord, prop: Propagated, records: dict, counts: dict,
           overwrite: bool) -> None:
    current = records[rec.image]
    if current.label_source == 'human' or (current.label is not None and not overwrite):
        return
    path = write_label(root / 'labels' / rec.sequence / f'{rec.stamp_ns}.png', prop.label)
    records[rec.image] = FrameRecord(rec.sequence, rec.index, rec.image, path, rec.stamp_ns, prop.source,
                                     rec.bag, rec.topic, rec.encoding)
    counts[prop.source] = counts.get(prop.source, 0) + 1
