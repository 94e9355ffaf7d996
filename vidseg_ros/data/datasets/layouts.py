"""Frame records, frame sources, and the dataset folder vidseg writes: ``index.csv`` and ``dataset.yaml``.

A record is one video frame on disk (image path, optional label path, sequence, frame index, stamp).
A :class:`FrameSource` bundles the records of one dataset with what is needed to read its labels
(a 256-entry lookup table from stored label values to class ids, the ignore value, the class names).
``extracted_source`` opens such a folder (from ``vidseg extract`` or ``label-import``); the public layouts
(CamVid, DAVIS, Cityscapes) and ``open_source``, the one opener, are in ``public_layouts``.
Everything here is plain files: no torch, no ROS.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from vidseg_ros.config import read_yaml_file
from vidseg_ros.data.images import (clip, grey_in_colour, palette_index_pixels, read_label_pixels, short,
                                    write_file_atomic)
from vidseg_ros.text import control_character_problem, long_text_problem
from vidseg_ros.files import NotAFileError, file_problem, open_regular, real_path

log = logging.getLogger(__name__)

INDEX_NAME = 'index.csv'
META_NAME = 'dataset.yaml'
# Present while an extract into the dataset has not finished: after a Ctrl-C, a kill or a failure the
# index lists only the frames written so far, and the commands that read it say so.
EXTRACTING_NAME = '.vidseg.extracting'
INDEX_FIELDS = ('sequence', 'index', 'stamp_ns', 'image', 'label', 'label_source',
                'bag', 'topic', 'encoding')
LABEL_SOURCES = ('human', 'propagated', 'teacher', 'none')

DEFAULT_IGNORE = 255


@dataclass(frozen=True)
class FrameRecord:
    """One frame on disk. ``index`` is the frame number in the source video (gaps are real gaps)."""

    sequence: str
    index: int
    image: Path
    label: Path | None = None
    stamp_ns: int = 0
    label_source: str = 'none'      # human / propagated / teacher / none
    bag: str = ''
    topic: str = ''
    encoding: str = ''


def read_label_file(path, label_lut: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 class ids from a class-id PNG, through ``label_lut`` when the layout remaps values.

    A paletted PNG (DAVIS 2017, VOC) holds its ids as palette indices; a file with an EXIF orientation is
    turned as displayed, as its frame is (``read_label_pixels``)."""
    lab, palette = read_label_pixels(path)
    if lab is None:
        raise FileNotFoundError(f'cannot read label file {path}')
    if lab.ndim == 3 and palette and _is_paletted_png(path):
        lab = palette_index_pixels(path, lab[:, :, :3], palette, DEFAULT_IGNORE)
    elif grey_in_colour(lab) is not None:        # ids saved as RGB (1 -> (1, 1, 1)), as many tools save masks
        lab = grey_in_colour(lab)
    if lab.ndim == 3:
        raise ValueError(f'{path} is a colour image; import it first with `vidseg label-import DATASET LABEL_DIR '
                         '--classes classes.csv` (a table of the colours) to get class-id PNGs')
    if lab.dtype != np.uint8:       # e.g. a 16-bit PNG: astype would wrap 300 to 44 and 256 to 0 in silence
        from vidseg_ros.constants import MAX_CLASSES
        low, high = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
        if low < 0 or high >= MAX_CLASSES:
            raise ValueError(f'{path}: label values {low}..{high} in a {lab.dtype} image; class-id labels hold ids '
                             f'0..{MAX_CLASSES - 1} (masks are mono8: at most {MAX_CLASSES} classes); save it with '
                             '8-bit class ids')
    lab = lab.astype(np.uint8)
    return label_lut[lab] if label_lut is not None else lab


def _is_paletted_png(path) -> bool:
    with open_regular(path) as f:     # a FIFO among the labels blocked eval for good
        head = f.read(26)
    return head[:8] == b'\x89PNG\r\n\x1a\n' and len(head) == 26 and head[25] == 3


@dataclass
class FrameSource:
    """Records of one dataset plus how to turn its label files into class ids."""

    records: list[FrameRecord]
    class_names: list[str]
    ignore_index: int = DEFAULT_IGNORE
    label_lut: np.ndarray | None = None   # (256,) uint8: stored value -> class id (or ignore)
    name: str = ''
    fps: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read_label(self, rec: FrameRecord) -> np.ndarray | None:
        """(H, W) uint8 class ids of ``rec`` (None when the frame has no label)."""
        return None if rec.label is None else read_label_file(rec.label, self.label_lut)

    def sequences(self) -> dict[str, list[FrameRecord]]:
        """Records grouped by sequence, each list in frame-index order."""
        groups: dict[str, list[FrameRecord]] = {}
        for rec in self.records:
            groups.setdefault(rec.sequence, []).append(rec)
        return {k: sorted(v, key=lambda r: r.index) for k, v in groups.items()}

    def labelled(self) -> list[FrameRecord]:
        return [r for r in self.records if r.label is not None]

    def subset(self, records: list[FrameRecord]) -> FrameSource:
        return replace(self, records=list(records))


def identity_lut(ignore_index: int = DEFAULT_IGNORE, num_classes: int = 256) -> np.ndarray:
    """Values below ``num_classes`` map to themselves, everything else to ``ignore_index``."""
    lut = np.full(256, ignore_index, np.uint8)
    lut[:num_classes] = np.arange(min(num_classes, 256), dtype=np.uint8)
    return lut


def read_meta(root: str | Path) -> dict:
    """``dataset.yaml`` of an extracted dataset (class names, ignore index); {} when absent."""
    path = Path(root) / META_NAME
    if not path.is_file():
        return {}
    data = read_yaml_file(path, 'dataset metadata') or {}   # bounded: alias bombs, depth, size
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping')
    _check_meta_types(data, path)
    _check_class_names(data.get('classes'), path)
    return data


def _check_meta_types(data: dict, path: Path) -> None:
    """The keys read from a dataset.yaml have the types they are used as: ``classes: {a: 1}`` was read as the
    class list ['a'] (an eval of mIoU nan), ``ignore_index: [1]`` was an internal error (TypeError)."""
    expected = {'classes': (list, 'a list of names'), 'ignore_index': (int, 'an integer'),
                'fps': ((int, float), 'a number'), 'colors': (list, 'a list of [r, g, b]'),
                'licence': (str, 'text'), 'variant': (str, 'text')}
    for key, (kind, words) in expected.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f'{path}: {key} must be {words}, got {clip(repr(value), 80)}')
    if any(not isinstance(n, str) for n in data.get('classes') or []):
        raise ValueError(f'{path}: classes must be a list of names (text), got {clip(repr(data["classes"]), 80)}')
    # checked where read: a training refused a colour of 999 at its first save (check_meta), after an epoch
    bad = next((c for c in data.get('colors') or [] if not (isinstance(c, list) and len(c) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c))), None)
    if bad is not None:
        raise ValueError(f'{path}: colors must be [r, g, b] triples of 0..255, got {clip(repr(bad), 80)}')
    ignore = data.get('ignore_index')
    if ignore is not None and not 0 <= ignore <= 255:     # label PNGs are 8-bit: -7 was an OverflowError (exit 1)
        raise ValueError(f'{path}: ignore_index must be 0..255 (a label value), got {clip(str(ignore), 40)}')
    fps = data.get('fps')
    if fps is not None and not (math.isfinite(fps) and fps >= 0):
        raise ValueError(f'{path}: fps must be a finite number >= 0, got {fps!r}')


def write_meta(root: str | Path, meta: dict) -> None:
    _check_class_names(meta.get('classes'), Path(root) / META_NAME)
    # atomic: a full disk must not leave a truncated dataset.yaml (its classes) behind
    write_file_atomic(Path(root) / META_NAME, yaml.safe_dump(meta, sort_keys=False).encode())


def _check_class_names(names, where: Path) -> None:
    """Class names with control characters ("\\e" in double-quoted YAML) or over 200 characters are refused where
    the dataset is read:
    a checkpoint refuses them (``check_meta``), so a training on such a dataset failed at its first save, after
    an epoch's work."""
    if not isinstance(names, list):
        return
    if problem := control_character_problem(names, 'class names'):
        raise ValueError(f'{where}: {problem}; write them as plain text')
    if problem := long_text_problem(names, 'class names'):
        raise ValueError(f'{where}: {problem}; shorten them')


INDEX_REQUIRED = ('sequence', 'index', 'stamp_ns', 'image')


@contextlib.contextmanager
def csv_says_where(path: Path):
    """The csv module's own errors (a cell over its 131072-character limit, a NUL before Python 3.11) are a
    ValueError naming the file and line: they were an internal error ("Error: field larger than field limit")."""
    try:
        yield
    except csv.Error as e:
        raise ValueError(f'{path}: not a readable CSV table: {e}') from None


@contextlib.contextmanager
def not_utf8_says_where(path: Path):
    """A table that is not UTF-8 (a class table saved as Latin-1 by a spreadsheet) is a ValueError naming the
    file and how to fix it, not Python's bare "'utf-8' codec can't decode byte 0xe9 in position 12"."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}); '
                         'save it as UTF-8 (a spreadsheet\'s "CSV UTF-8")') from None


def has_index(root: str | Path) -> bool:
    """Whether ``root`` has an ``index.csv`` of any kind: a FIFO or a dangling link there is read (and refused by
    name) as the dataset's index, not taken for its absence ("no index.csv", or not a dataset at all)."""
    return os.path.lexists(Path(root) / INDEX_NAME)


def read_index(root: str | Path, warn_incomplete: bool = True) -> list[FrameRecord]:
    """Records of an extracted dataset from ``<root>/index.csv`` (paths relative to root).

    A missing column, or an empty or malformed cell in a required one (``sequence``, ``index``,
    ``stamp_ns``, ``image``; ``index`` and ``stamp_ns`` are integers), is a ValueError naming the
    file, the row (and its line) and the column. A warning says when an extract into ``root`` did not
    finish (``warn_incomplete``; extract itself, resuming, does not need it).
    """
    root = Path(root)
    path = root / INDEX_NAME
    if not has_index(root):
        raise FileNotFoundError(f'no {INDEX_NAME} in {root}; create it with `vidseg extract`')
    if problem := file_problem(path):      # a link to nothing said "No such file or directory"
        raise NotAFileError(path, problem)
    if warn_incomplete and (root / EXTRACTING_NAME).exists():
        log.warning('%s: an extract into it did not finish (interrupted, killed or failed), so %s lists only '
                    'the frames written so far: run the same `vidseg extract` again to complete it',
                    short(root), INDEX_NAME)
    records, seen = [], {}
    # utf-8-sig: a BOM (a spreadsheet's "CSV UTF-8") made the first column '\ufeffsequence', "no column sequence".
    # surrogateescape: the cells are file and folder names, which hold bytes that are not UTF-8 on an old disk
    # (write_index keeps them so, as the file system does)
    with open_regular(path, 'r', newline='', encoding='utf-8-sig', errors='surrogateescape') as f, \
            csv_says_where(path):
        reader = csv.DictReader(f)
        missing = [c for c in INDEX_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f'{path}: no column {", ".join(missing)} in the header '
                             f'({clip(",".join(reader.fieldnames or [])) or "empty file"}); '
                             f'an index has {",".join(INDEX_FIELDS)}')
        for n, row in enumerate(reader, 1):
            cell = _IndexRow(path, n, reader.line_num, row)
            seq = cell.sequence()
            index, stamp = cell.integer('index', low=0), cell.integer('stamp_ns')
            # a row given twice was read as two frames (a 10 Hz sequence evaluated as 20 Hz video)
            if (first := seen.setdefault((seq, index), n)) != n:
                raise ValueError(f'{path}: row {n} (line {reader.line_num}): frame {index} of sequence '
                                 f'{short(seq, 100)} is also row {first}; each frame has one row')
            image, lab = cell.text('image', required=True), cell.text('label')
            records.append(FrameRecord(
                seq, index, root / image, root / lab if lab else None, stamp_ns=stamp,
                label_source=cell.text('label_source') or 'none', bag=cell.text('bag'), topic=cell.text('topic'),
                encoding=cell.text('encoding')))
    return records


@dataclass
class _IndexRow:
    """One data row of an index.csv, read cell by cell so that a bad cell names where it is."""

    path: Path
    row: int          # data row, 1 = the first after the header
    line: int         # the file line it ends on
    cells: dict

    def _where(self, column: str) -> str:
        return f'{self.path}: row {self.row} (line {self.line}), column {column}'

    def text(self, column: str, required: bool = False) -> str:
        value = self.cells.get(column)
        value = '' if value is None else value
        if required and not value.strip():
            short_row = ' (the row has fewer cells than the header)' if self.cells.get(column) is None else ''
            raise ValueError(f'{self._where(column)}: empty{short_row}')
        return value

    def sequence(self) -> str:
        """The sequence name, refused unless one plain folder name: it names folders that propagate and
        make-variant write (``labels/<sequence>/``, ``images/<sequence>_<i>_noise/``), and a downloaded index
        holding ``../../x`` or ``/tmp/x`` had them write outside the dataset."""
        seq = self.text('sequence', required=True)
        problem = ('a path, not a folder name' if seq in ('.', '..') or any(c in seq for c in '/\\\0') else
                   'control characters' if control_character_problem([seq], '') else '')
        if problem:
            raise ValueError(f'{self._where("sequence")}: {short(seq, 100)}: {problem}; a sequence is one printable '
                             'folder name (no / or \\, not . or ..)')
        return seq

    def integer(self, column: str, low: int = -2**63) -> int:
        """An int64 (a bag's stamps and counters) >= ``low``: frame -5 and stamp 10**30 were taken."""
        value = self.text(column, required=True)
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f'{self._where(column)}: {short(value)} is not an integer') from None
        if not low <= number < 2**63:
            raise ValueError(f'{self._where(column)}: {short(value)} is out of range {low}..{2**63 - 1}')
        return number


def write_index(root: str | Path, records: list[FrameRecord]) -> Path:
    """Write ``index.csv`` atomically (sorted by sequence, index), paths stored relative to root."""
    root = Path(root)
    text = io.StringIO(newline='')
    w = csv.DictWriter(text, fieldnames=INDEX_FIELDS)
    w.writeheader()
    for r in sorted(records, key=lambda r: (r.sequence, r.index)):
        w.writerow({'sequence': r.sequence, 'index': r.index, 'stamp_ns': r.stamp_ns,
                    'image': _rel(r.image, root), 'label': _rel(r.label, root) if r.label else '',
                    'label_source': r.label_source, 'bag': r.bag, 'topic': r.topic,
                    'encoding': r.encoding})
    # no temporary file is left behind when the disk is full, and the old index stays whole. A bag or dataset
    # under a name that is not UTF-8 (Latin-1 from an old disk: Python holds its bytes as lone surrogates) keeps
    # those bytes, as the file system does: strict UTF-8 refused such an extract at its end, after every frame
    return write_file_atomic(root / INDEX_NAME, text.getvalue().encode('utf-8', 'surrogateescape'))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(Path(path).resolve())


def extracted_source(root: str | Path) -> FrameSource:
    """An extracted (or imported) dataset: ``images/``, ``labels/``, ``index.csv``, ``dataset.yaml``."""
    meta = read_meta(root)
    ignore = int(meta.get('ignore_index', DEFAULT_IGNORE))
    names = list(meta.get('classes', []))
    lut = identity_lut(ignore, len(names)) if names else None
    records = read_index(root)
    if meta.get('variant'):
        _check_variant_files(root, meta['variant'], records)
    return FrameSource(records, names, ignore, lut, name=Path(root).name, fps=float(meta.get('fps', 0.0)))


def _check_variant_files(root, variant, records: list[FrameRecord]) -> None:
    """A variant refers to its source's frames by a path relative to itself (absolute in older ones): when the
    source moved without it, say so once, not
    'cannot read image file' from the middle of a training run."""
    for rec in records:
        for path in (rec.image, rec.label):
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(f'{root}: variant {clip(variant, 60)} refers to {clip(path, 200)}, which is '
                                        'missing (its source dataset moved or was deleted?); make it again with '
                                        '`vidseg make-variant`')


def check_new_output(out: str | Path, source: str | Path | None = None, source_files=(), *,
                     what: str = 'the source', files_what: str = "the source's files") -> None:
    """Refuse an output folder whose data a new dataset would overwrite.

    That is the ``source`` folder or one inside it, a folder holding (any level down) the
    ``source_files``, or one that already holds a dataset (``index.csv`` / ``dataset.yaml``).
    ``what`` and ``files_what`` name the source and its files in the message.
    """
    out = real_path(out)        # Path.resolve() raised RuntimeError at a link loop
    if source is not None:
        src = real_path(source)
        if out == src or src in out.parents:
            raise ValueError(f'the output folder {clip(out)} is (inside) {what} {clip(src)}; '
                             'give a new folder outside it')
    # each folder resolved once, not each file's (2.3 s of realpath at 100k frames, twice per propagate --out)
    for folder in sorted({real_path(parent) for parent in {Path(f).parent for f in source_files if f}}):
        if out == folder or out in folder.parents:
            raise ValueError(f'the output folder {clip(out)} holds {files_what} ({clip(folder)}); '
                             'give a new folder')
    held = [name for name in (INDEX_NAME, META_NAME) if (out / name).exists()]
    if held:
        raise ValueError(f'{clip(out)} already holds a dataset ({", ".join(held)}); give a new output folder '
                         '(or delete that one first)')
