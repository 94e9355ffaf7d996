"""Label ids beyond a model's classes: read as ignore in training, counted as labels are read (no extra pass over
the data), warned about once per data root, and summarised in one wording for vidseg eval's and finetune's reports."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import numpy as np

from vidseg_ros.data.datasets.layouts import DEFAULT_IGNORE, FrameRecord, FrameSource, read_label_file
from vidseg_ros.text import clip

log = logging.getLogger(__package__ + '.data_setup')     # the warning training gave, under its name

_warned_ids: set[str] = set()     # data roots already warned about (one warning per dataset and process)


def raw_ids_are_class_ids(src: FrameSource) -> bool:
    """Whether ``src``'s label files hold class ids as they are: no ``label_lut``, or one that keeps the ids
    below some count and makes every other value its ignore value (a folder dataset naming its classes,
    CamVid, Cityscapes train ids); not DAVIS, whose every value above 0 is the object."""
    if src.label_lut is None:
        return True
    kept = src.label_lut == np.arange(len(src.label_lut))
    first_changed = len(kept) if kept.all() else int(np.argmin(kept))
    return bool((src.label_lut[first_changed:] == src.ignore_index).all())


def ids_beyond(raw: np.ndarray, known_classes: int, *ignore: int | None) -> np.ndarray:
    """(256,) pixels of each id of the uint8 label ``raw`` that is ``known_classes`` or more and none of ``ignore``
    (None entries skipped); zeros where there is none."""
    counts = np.bincount(raw.ravel(), minlength=256)[:256]
    counts[:known_classes] = 0
    for v in ignore:
        if v is not None and 0 <= v < 256:
            counts[v] = 0
    return counts


def beyond_summary(beyond: np.ndarray, files: list[str], labels_read: int, scored_pixels: int | None = None) -> dict:
    """Label ids beyond the classes counted (``beyond``: (256,) pixels per id, ``ids_beyond`` summed; ``files``:
    the label files holding any, of ``labels_read``), for a report: ``pixels`` beyond the classes, ``ids`` (id ->
    pixels, the 20 most frequent), ``label_files`` holding any of ``label_files_read``, the ``first`` such file,
    and their ``share`` of ``scored_pixels`` + ``pixels`` (None when not given)."""
    total = int(beyond.sum())
    top = sorted(np.flatnonzero(beyond).tolist(), key=lambda v: -beyond[v])[:20]
    return {'pixels': total, 'ids': {int(v): int(beyond[v]) for v in sorted(top)},
            'label_files': len(files), 'label_files_read': labels_read,
            'first': files[0] if files else None,
            'share': total / (scored_pixels + total) if scored_pixels is not None and total else None}


def beyond_text(summary: dict, beyond: np.ndarray, known_classes: int, ignore: tuple, what: str, fix: str) -> str:
    """One line for ``summary`` (:func:`beyond_summary` of ``beyond``): how many pixels of which ids, beyond
    ``known_classes`` and none of ``ignore`` (None entries skipped), ``what`` (e.g. 'were left out of the
    scores'), where, and ``fix``. The one wording of vidseg eval's and finetune's warnings."""
    ids = ', '.join(str(v) for v in summary['ids'])
    more = ' and more' if len(summary['ids']) < int((beyond > 0).sum()) else ''
    share = f' ({summary["share"]:.1%} of the labelled pixels)' if summary['share'] is not None else ''
    ignored = ' or '.join(str(v) for v in dict.fromkeys(ignore) if v is not None)
    return (f'{summary["pixels"]} label pixels{share} in {summary["label_files"]} of {summary["label_files_read"]} '
            f'label files hold ids {ids}{more}: beyond the {known_classes} classes (0..{known_classes - 1}) and '
            f'not the ignore id {ignored}; they {what} (first: {clip(summary["first"])}); {fix}')


def counting_ids_beyond(src: FrameSource, known_classes: int, also_ignore: int | None = None) -> FrameSource:
    """``src`` as it reads labels, counting the pixels of every id >= ``known_classes`` other than the data's
    ignore value (and ``also_ignore``, e.g. the model's): ``vidseg eval`` says how many were left out of the
    scores, and of which ids (:meth:`IdsBeyondIgnored.beyond_summary`). ``src`` unchanged where its label files
    are not class ids (``raw_ids_are_class_ids``)."""
    if not raw_ids_are_class_ids(src) or known_classes <= 0:
        return src
    kept = {f.name: getattr(src, f.name) for f in fields(src)}
    return IdsBeyondIgnored(**kept, known_classes=known_classes, raw_ignore=src.ignore_index, data_root=src.name,
                            also_ignore=also_ignore, warn_first=False)


@dataclass
class IdsBeyondIgnored(FrameSource):
    """A source of raw label ids read through ``label_lut`` (training: one that makes ids >= ``known_classes``
    ignore). Each label file's ids beyond the classes (other than ``raw_ignore`` and ``also_ignore``) are counted
    once (``beyond``, ``beyond_files``, ``labels_read``); with ``warn_first`` the first such id read is warned
    about, once per data root and process (per DataLoader worker with num_workers)."""

    known_classes: int = 0
    raw_ignore: int = DEFAULT_IGNORE
    data_root: str = ''
    also_ignore: int | None = None
    warn_first: bool = True
    beyond: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))   # pixels per id
    beyond_files: list[str] = field(default_factory=list)
    labels_read: int = 0
    _counted: set = field(default_factory=set, repr=False)

    def read_label(self, rec: FrameRecord) -> np.ndarray | None:
        if rec.label is None:
            return None
        raw = read_label_file(rec.label)
        if str(rec.label) not in self._counted:
            self._count(str(rec.label), raw)
        return self.label_lut[raw] if self.label_lut is not None else raw

    def _count(self, label: str, raw: np.ndarray) -> None:
        self._counted.add(label)
        self.labels_read += 1
        counts = ids_beyond(raw, self.known_classes, self.raw_ignore, self.also_ignore)
        if not counts.any():
            return
        self.beyond += counts
        self.beyond_files.append(label)
        if self.warn_first and self.data_root not in _warned_ids:
            _warned_ids.add(self.data_root)
            log.warning('%s: label id %d >= num_classes %d (%s/dataset.yaml %s); ids from %d up are ignored '
                        '(as ignore_index %d); %s', label, int(np.flatnonzero(counts)[0]), self.known_classes,
                        self.data_root, self._named(), self.known_classes, self.raw_ignore, self._fix())

    def beyond_summary(self, scored_pixels: int | None = None) -> dict:
        """What was counted, for a report (:func:`beyond_summary`)."""
        return beyond_summary(self.beyond, self.beyond_files, self.labels_read, scored_pixels)

    def beyond_text(self, summary: dict, what: str, fix: str | None = None) -> str:
        """One line for ``summary`` (:func:`beyond_text`), with training's ``fix`` by default."""
        return beyond_text(summary, self.beyond, self.known_classes, (self.raw_ignore, self.also_ignore), what,
                           fix or self._fix())

    def _named(self) -> str:
        if not self.class_names:
            return 'names no classes'
        return f'names {len(self.class_names)}: ' + ', '.join(map(repr, self.class_names))[:200]

    def _fix(self) -> str:
        if not self.class_names:
            return 'set num_classes, or name the classes with vidseg label-import --class-names'
        return ('name that class in dataset.yaml classes, or re-import the labels with vidseg label-import --map '
                'FROM:TO')
