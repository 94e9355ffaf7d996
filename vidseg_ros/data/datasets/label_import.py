"""``vidseg label-import``: other people's labels into a dataset, and public datasets indexed in place.

``import_labels`` pairs label files (class-id PNGs with any values, colour PNGs with a class table) with
the frames of an extracted dataset and writes them as class-id PNGs under ``labels/``, all or none, index
and ``dataset.yaml`` updated. ``import_layout`` indexes a whole CamVid / DAVIS / Cityscapes folder without
copying its images. Reading and writing one label file is ``labels``' part.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidseg_ros.constants import CAMVID_LICENCE, DAVIS_LICENCE
from vidseg_ros.data.image_headers import file_image_hw, image_file_info
from vidseg_ros.data.images import clip, short
from vidseg_ros.data.order import natural_key
from vidseg_ros.data.datasets.labels import (UNKNOWN_WARN, png_kind, read_class_table, read_label_with_stats,
                                             remap_lut, write_label)
from vidseg_ros.data.datasets.layouts import (DEFAULT_IGNORE, FrameRecord, check_new_output, read_index, read_meta,
                                              write_index, write_meta)
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.data.datasets.public_layouts import camvid_source, cityscapes_source, davis_source
from vidseg_ros.data.video import check_frame_sizes

log = logging.getLogger(__name__)
LAYOUTS = ('camvid', 'davis', 'cityscapes')
LAYOUT_LICENCES = {'camvid': CAMVID_LICENCE, 'davis': DAVIS_LICENCE,
                   'cityscapes': 'Cityscapes: its own licence, non-commercial only (cityscapes-dataset.com/license)'}
MATCHES = ('stem', 'order')


def import_labels(dataset: str | Path, label_dir: str | Path, *, classes: str | Path | None = None,
                  class_names: list[str] | None = None, mapping: dict[int, int] | None = None,
                  ignore_index: int = DEFAULT_IGNORE, match: str = 'stem',
                  source: str = 'human', licence: str | None = None, color_tolerance: int = 0) -> dict:
    """``vidseg label-import``: label files -> ``labels/`` of an extracted dataset, index updated.

    Args:
        dataset: dataset folder with ``index.csv`` (from ``vidseg extract``).
        label_dir: label PNGs; ``stem`` matching pairs ``<stamp_ns>.png`` (optionally under the
            sequence folder) with the frame of that stamp; ``order`` pairs the sorted label files
            with the frames in index order (for labels of frames that went through bag-from-frames).
        classes: class table CSV (names, colours, ids); needed for colour labels.
        class_names: names of ids 0..N-1 when there is no table; values >= N become ignore.
        mapping: stored value -> class id (applied to id PNGs), e.g. ``{255: 1}`` for DAVIS masks.
        ignore_index: value written for unknown pixels.
        source: label source recorded in the index (human / teacher / propagated).
        licence: licence of the images and labels, kept in dataset.yaml for trained models' provenance.
        color_tolerance: colour labels: a colour within this (0..64, in every channel) of exactly one class
            colour is that class, for masks saved as JPEG; 0 = exact colours only.

    Returns: counts ``{'imported', 'unmatched', 'frames'}``.
    """
    if match not in MATCHES:
        raise ValueError(f'match must be one of {MATCHES}, got {match!r}')
    if classes and class_names:
        raise ValueError('give class names either in the class table (--classes) or as --class-names, not both')
    _check_names(class_names)
    if not 0 <= color_tolerance <= 64:
        raise ValueError(f'color_tolerance {color_tolerance}: give 0..64 (JPEG shifts colours by a few values; '
                         'e.g. 8)')
    dataset = Path(dataset)
    with dataset_lock(dataset):     # two writers at once: the one ending last dropped the other's index rows
        return _import_labels(dataset, label_dir, classes, class_names, mapping, ignore_index, match,
                              source, licence, color_tolerance)


def _import_labels(dataset: Path, label_dir: str | Path, classes, class_names, mapping, ignore_index: int, match: str,
                   source: str, licence: str | None, tolerance: int = 0) -> dict:
    """``import_labels`` once its arguments are checked and ``dataset`` is locked."""
    records = read_index(dataset)
    table = read_class_table(classes) if classes else None
    names = table.names if table else list(class_names or read_meta(dataset).get('classes', []))
    lut = remap_lut(mapping, len(names) if names else None, ignore_index, table.values if table else None)
    if names and ignore_index < len(names):
        raise ValueError(f'ignore_index {ignore_index} is a class id of the {len(names)} classes; '
                         f'use a value >= {len(names)} (e.g. 255)')
    suffixes = ('.png', '.jpg', '.jpeg') if tolerance else ('.png',)    # JPEG: colour masks, colours matched loosely
    files = sorted((p for p in Path(label_dir).rglob('*') if p.suffix.lower() in suffixes and p.is_file()
                    and not _hidden(p, Path(label_dir))),
                   key=natural_key) if Path(label_dir).is_dir() else []     # label_2 before label_10; .PNG too
    if not files:
        raise FileNotFoundError(_no_pngs(Path(label_dir)))
    pairs = _match(records, files, match, Path(label_dir), dataset)
    for rec, file in pairs:     # before writing any: a label of another size fails propagate / eval later
        why = _size_mismatch(file, rec.image)
        if why:
            raise ValueError(why)
    by_image = {r.image: r for r in records}
    stray: list[tuple[float, Path, str]] = []     # colour labels with many pixels in colours not in the table
    present = np.zeros(256, bool)                 # ids seen in any label
    dropped = _dropped_values(lut, mapping, ignore_index, table.ignore_values if table else None)
    beyond: dict[int, Path] = {}                  # stored id values that became ignore unasked -> first file
    blank: list[Path] = []                        # labels without one class pixel
    palettes: list[list[tuple[int, int, int]]] = []   # of paletted labels read by index: the user's colours

    def load(file: Path) -> np.ndarray:
        ids, share, colours, seen = read_label_with_stats(file, lut, table.colors if table else None, ignore_index,
                                                table.ignore_colors if table else None, tolerance)
        if share > UNKNOWN_WARN:
            stray.append((share, file, colours))
        for value in np.flatnonzero(seen & dropped).tolist():
            beyond.setdefault(value, file)
        present[np.unique(ids)] = True
        if not np.any(ids != ignore_index):
            blank.append(file)
        if table is None and not palettes and png_kind(file) == 'palette':
            palettes.append(image_file_info(file)[3] or [])
        return ids

    def index(done: list[tuple[FrameRecord, Path]]) -> None:
        for rec, out in done:
            by_image[rec.image] = FrameRecord(rec.sequence, rec.index, rec.image, out, rec.stamp_ns, source,
                                              rec.bag, rec.topic, rec.encoding)
        write_index(dataset, list(by_image.values()))

    _write_all(dataset, pairs, load, index)
    meta = read_meta(dataset)
    if names:
        if meta.get('classes') != names and not table:
            meta.pop('colors', None)   # colours of other classes: training picks default ones instead
        meta['classes'] = names
    if table:
        meta['colors'] = [list(c) for c in table.colors]
    elif names and palettes and len(set(palettes[0][:len(names)])) == len(names):
        meta['colors'] = [list(c) for c in palettes[0][:len(names)]]   # the colours the labelling tool showed
    meta['ignore_index'] = ignore_index
    if licence:
        meta['licence'] = licence
    write_meta(dataset, meta)
    log.info('imported %d label(s) into %s (%d file(s) unmatched)', len(pairs), dataset,
             len(files) - len(pairs))
    if stray:
        _warn_stray_colours(stray, len(pairs), names, present, tolerance)
    if beyond:
        _warn_beyond(beyond, names, present, table is not None)
    if blank:       # e.g. a mask exported before anything was drawn, or every colour unknown
        log.warning('%d of %d label(s) have no pixel of any class (all ignore %d), e.g. %s: training learns nothing '
                    'from them%s', len(blank), len(pairs), ignore_index, clip(blank[0]),
                    '; no label has one' if len(blank) == len(pairs) else '')
    return {'imported': len(pairs), 'unmatched': len(files) - len(pairs), 'frames': len(records)}


def _dropped_values(lut: np.ndarray, mapping: dict[int, int] | None, ignore_index: int,
                    table_ignore: list[int] | None = None) -> np.ndarray:
    """(256,) bool: stored id values that ``lut`` makes ignore without being asked (no class of that id,
    not the ignore value itself or one of the class table's ignore rows, not a ``--map`` to ignore)."""
    dropped = lut == ignore_index
    dropped[ignore_index] = False
    dropped[list(table_ignore or [])] = False
    for src in (mapping or {}):
        dropped[src] = False
    return dropped


def _warn_beyond(beyond: dict[int, Path], names: list[str], present: np.ndarray, table: bool) -> None:
    """One warning for id labels holding values that are no class id: they became ignore as documented, but a
    label set counted from 1, or with more classes than named, loses whole classes that way in silence."""
    values = sorted(beyond)
    shown = ', '.join(map(str, values[:8])) + (f' and {len(values) - 8} more' if len(values) > 8 else '')
    empty = [n for i, n in enumerate(names) if not present[i]]
    log.warning('label(s) hold value(s) %s (first in %s) that are no class id of the %d classes (%s: %s), so those '
                'pixels became ignore%s; give --map VALUE:ID for them or the right %s', shown, clip(beyond[values[0]]),
                len(names), 'ids in the class table' if table else f'0..{len(names) - 1}',
                ', '.join(map(short, names[:12])) + (', ...' if len(names) > 12 else ''),
                f', and {", ".join(map(short, empty))} got no pixel in any label' if empty else '',
                'class table' if table else '--class-names')


def _hidden(path: Path, root: Path) -> bool:
    """A hidden file or one in a hidden folder under ``root``: macOS's ``._label.png`` beside each copied label
    was paired with a frame by ``--match order`` (every label after it one frame off) and failed as unreadable;
    ``.git`` folders hold no labels."""
    return any(part.startswith('.') for part in path.relative_to(root).parts)


def _no_pngs(label_dir: Path) -> str:
    """Why ``label_dir`` gave no label, naming the image files it does hold (JPEG masks are common)."""
    if not label_dir.is_dir():
        return f'{clip(label_dir)}: not a folder with label PNGs'
    others: dict[str, int] = {}
    for p in label_dir.rglob('*'):
        if p.suffix.lower() in ('.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.gif') and p.is_file():
            others[p.suffix.lower()] = others.get(p.suffix.lower(), 0) + 1
    if not others:
        return f'{clip(label_dir)}: not a folder with label PNGs'
    found = ', '.join(f'{n} {ext}' for ext, n in sorted(others.items()))
    return (f'{clip(label_dir)} holds no label PNG (found {found} files): labels are read from PNGs, as a lossy '
            'format (JPEG) shifts ids and colours at every edge; export the labels as PNG (colour JPEG masks: '
            'give --classes and --color-tolerance 8)')


def _warn_stray_colours(stray: list[tuple[float, Path, str]], total: int, names: list[str],
                        present: np.ndarray, tolerance: int = 0) -> None:
    """One warning for the colour labels with more than ``UNKNOWN_WARN`` of their pixels in colours the
    class table lacks: those pixels became ignore (as documented), but so many of them mean lossy (JPEG)
    or antialiased labels, whose shifted colours can take a whole class away."""
    share, worst, colours = max(stray, key=lambda s: s[0])
    empty = [n for i, n in enumerate(names) if not present[i]]
    log.warning('%d of %d colour label(s) have more than %d%% of their pixels in colours not in the class table '
                '(worst: %s, %.1f%%, e.g. %s); those pixels became ignore%s. Labels saved lossily (JPEG) or '
                'drawn antialiased have shifted colours: export them as PNG without smoothing, add the colours '
                'to the table, or give --color-tolerance %d', len(stray), total, round(UNKNOWN_WARN * 100),
                clip(worst), share * 100, colours,
                f', and {", ".join(map(short, empty))} got no pixel in any label' if empty else '',
                max(8, 2 * tolerance))


def _write_all(dataset: Path, pairs, load, before_move: Callable[[list[tuple[FrameRecord, Path]]], None]) -> None:
    """Every label of ``pairs`` into ``labels/``, all or none: each is staged beside its place, then
    ``before_move`` (the index write) runs, and the labels are moved into place only when all have loaded and
    been written and the index is saved. A bad file late in the folder, a full disk or a failed index write
    leaves the labels of an earlier import as they were (they were overwritten while the index still
    described them)."""
    staged: list[tuple[Path, Path]] = []
    new_dirs: list[Path] = [] if (dataset / 'labels').is_dir() else [dataset / 'labels']
    try:
        for rec, file in pairs:
            final = dataset / 'labels' / rec.sequence / f'{rec.stamp_ns}.png'
            if not final.parent.is_dir():
                new_dirs.append(final.parent)
            staged.append((_stage(final, load(file)), final))
        before_move([(rec, final) for (rec, _), (_, final) in zip(pairs, staged)])
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(new_dirs):      # only the folders this import made, and only when empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    for tmp, final in staged:
        tmp.replace(final)


def _stage(final: Path, ids: np.ndarray) -> Path:
    """``ids`` written beside ``final``, to be moved there; a write error (a full disk) names ``final``."""
    try:
        return write_label(final.with_name(f'.{final.stem}.import.png'), ids)
    except OSError as e:
        raise OSError(e.errno, f'{e.strerror or e}; no label was changed', str(final)) from e


def _size_mismatch(label: Path, frame: Path) -> str | None:
    """Why ``label`` cannot label ``frame`` (another size, both as displayed: frames are read turned by their
    EXIF orientation, as every viewer and labelling tool shows them), or None."""
    (lh, lw), (fh, fw) = file_image_hw(label), file_image_hw(frame)
    if (lh, lw) == (fh, fw):
        return None
    why = (f'label {clip(label)} is {lw}x{lh} but its frame {clip(frame)} is {fw}x{fh}; labels must have their '
           'frame\'s size')
    orientation = image_file_info(frame)[2]
    if orientation >= 5 and (lh, lw) == (fw, fh):
        why += (f' (the frame\'s EXIF orientation {orientation} turns it by 90 degrees for display, and frames are '
                'read as displayed: draw or export the label on the displayed frame, or strip the tag from both)')
    return why


def _check_names(names: list[str] | None) -> None:
    if names is None:
        return
    if not names or any(not n or len(n) > 64 for n in names) or len(set(names)) != len(names):
        raise ValueError(f'class names must be distinct, non-empty and at most 64 characters, '
                         f'comma-separated (e.g. background,object); got {",".join(names)[:120]!r}')
    if len(names) > 255:
        raise ValueError(f'{len(names)} class names; 8-bit labels hold at most 255 classes')


def _match(records: list[FrameRecord], files: list[Path], match: str, root: Path, dataset: Path):
    """(record, label file) pairs; with ``stem``, a folder where no name is a frame's stamp is refused."""
    if match == 'order':
        ordered = sorted(records, key=lambda r: (r.sequence, r.index))
        if len(files) > len(ordered):
            raise ValueError(f'{len(files)} label files but only {len(ordered)} frames')
        return list(zip(ordered, files))
    by_stamp: dict[str, list[FrameRecord]] = {}
    for r in records:
        by_stamp.setdefault(str(r.stamp_ns), []).append(r)
    if not any(f.stem in by_stamp for f in files):
        raise ValueError(f'none of the {len(files)} label PNGs in {root} is named like a frame of {dataset} '
                         '(<stamp_ns>.png, as in its images/ folder); or pair them in order with --match order')
    pairs = []
    for f in files:
        stamped = by_stamp.get(f.stem, [])
        # same stamp on two topics (a stereo pair): the folder names the sequence
        cands = [r for r in stamped if r.sequence == f.parent.name] if len(stamped) > 1 else stamped
        if len(cands) == 1:
            pairs.append((cands[0], f))
        elif len(stamped) > 1:      # it said 'matches 0 frames' of a stamp two sequences hold
            log.warning('label %s: %d frames have its stamp (%s); skipped: put it in a folder named after its '
                        'sequence', f.relative_to(root), len(stamped),
                        clip(', '.join(sorted(r.sequence for r in stamped)), 200))
        else:
            log.warning('label %s matches no frame; skipped', f.relative_to(root))
    return pairs


def import_layout(src: str | Path, out: str | Path, layout: str, split: str = 'train',
                  sequences: list[str] | None = None) -> dict:
    """Index a CamVid / DAVIS / Cityscapes folder as a vidseg dataset without copying images.

    The index points at the original image files; labels are converted to the dataset convention
    (class ids, ``ignore_index``) under ``out/labels/``. Returns counts.
    """
    makers = {'camvid': lambda: camvid_source(src, split), 'davis': lambda: davis_source(src, sequences),
              'cityscapes': lambda: cityscapes_source(src, split)}
    if layout not in makers:
        raise ValueError(f'unknown layout {layout!r}; valid: {", ".join(LAYOUTS)}')
    check_new_output(out, src)
    fs = makers[layout]()
    with dataset_lock(out, create=True):
        check_new_output(out, src)      # again: another import may have made it a dataset meanwhile
        return _index_layout(fs, Path(src), Path(out), layout)


def _index_layout(fs, src: Path, out: Path, layout: str) -> dict:
    """``import_layout``'s labels, index and dataset.yaml written to the locked ``out``."""
    check_frame_sizes(fs.records)   # from the headers, before a label is converted
    for rec in fs.records:      # before writing any: training resized such a label in silence, eval failed late
        why = rec.label is not None and _size_mismatch(rec.label, rec.image)
        if why:
            raise ValueError(why)
    records = []
    for rec in fs.records:
        lab = None
        if rec.label is not None:
            lab = write_label(out / 'labels' / rec.sequence / f'{rec.stamp_ns}.png', fs.read_label(rec))
        records.append(FrameRecord(rec.sequence, rec.index, rec.image.resolve(), lab, rec.stamp_ns,
                                   'human' if lab else 'none', str(src), layout, rec.image.suffix[1:]))
    write_index(out, records)
    meta = {'classes': fs.class_names, 'ignore_index': fs.ignore_index, 'fps': fs.fps, 'layout': layout}
    if layout in LAYOUT_LICENCES:
        meta['licence'] = LAYOUT_LICENCES[layout]
    write_meta(out, meta)
    return {'frames': len(records), 'labelled': sum(r.label is not None for r in records)}
