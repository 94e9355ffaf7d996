"""Label import: class-id PNGs, colour-palette PNGs with a class table, remapping, ignore values.

Labels on disk in a vidseg dataset are single-channel 8-bit PNGs of class ids, ``ignore_index``
(default 255) where unknown, at ``labels/<sequence>/<stamp_ns>.png``; ``dataset.yaml`` names the
classes. This module turns other people's labels into that: per-frame id PNGs with arbitrary
values (``remap``), colour PNGs (``palette`` + a class table CSV like CamVid's ``classes.csv``),
and whole CamVid / DAVIS / Cityscapes folders (``import_layout``, which indexes the original files
in place instead of copying them).
"""
from __future__ import annotations

import contextlib

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.constants import CAMVID_LICENCE, DAVIS_LICENCE
from vidseg_ros.data.image_headers import file_image_hw, image_file_info
from vidseg_ros.data.images import clip, grey_in_colour, palette_indices, read_label_pixels, short, write_image_atomic
from vidseg_ros.data.order import natural_key
from vidseg_ros.data.datasets.layouts import (DEFAULT_IGNORE, INDEX_NAME, META_NAME, FrameRecord, camvid_source,
                                              cityscapes_source, csv_says_where, davis_source, not_utf8_says_where,
                                              read_index, read_meta, write_index, write_meta)
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.data.video import check_frame_sizes
from vidseg_ros.text import control_character_problem, long_text_problem
from vidseg_ros.files import open_regular, real_path

log = logging.getLogger(__name__)
LAYOUTS = ('camvid', 'davis', 'cityscapes')
LAYOUT_LICENCES = {'camvid': CAMVID_LICENCE, 'davis': DAVIS_LICENCE,
                   'cityscapes': 'Cityscapes: its own licence, non-commercial only (cityscapes-dataset.com/license)'}
MATCHES = ('stem', 'order')
UNKNOWN_WARN = 0.02     # share of a colour label's pixels in colours not in the table that earns a warning
_PNG_KINDS = {0: 'grey', 2: 'colour', 3: 'palette', 4: 'grey+alpha', 6: 'colour+alpha'}   # IHDR colour type


@dataclass
class LabelClasses:
    """Class names and display colours; ``values`` are the ids stored in label files."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    values: list[int]
    ignore_value: int | None = None     # stored value / colour row meaning "unlabelled"
    ignore_color: tuple[int, int, int] | None = None    # that row's colour (a known colour, not a stray one)


def read_class_table(path: str | Path) -> LabelClasses:
    """CSV with a header naming id/value, name and r, g, b columns (CamVid's ``classes.csv`` works).

    A row whose ``evaluated`` column is ``no`` (or whose name is void/unlabelled/ignore) is the
    ignore row. Ids and colour components are 0..255; no two rows share a colour or an id.
    """
    # open_regular: a FIFO blocked here for good, /dev/zero took 6 GB in seconds
    with open_regular(path, 'r', newline='', encoding='utf-8-sig') as f, not_utf8_says_where(path), \
            csv_says_where(path):  # -sig: BOM
        reader = csv.DictReader(f)
        rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise ValueError(f'{path}: empty class table')
    keys = {k.lower(): k for k in rows[0][1] if k is not None}
    vcol = next((keys[k] for k in ('label_value', 'value', 'id', 'class_id') if k in keys), None)
    ncol = next((keys[k] for k in ('class_name', 'name', 'class') if k in keys), None)
    if ncol is None or not all(c in keys for c in 'rgb'):
        raise ValueError(f'{path}: need columns name, r, g, b (and optionally id); got {clip(list(rows[0][1]))}')
    names, colors, values, ignore, ignore_color, seen = [], [], [], None, None, {}
    for i, (line, row) in enumerate(rows):
        where = f'{path} line {line}'
        value = _byte(row[vcol], where, vcol) if vcol else i
        color = tuple(_byte(row[keys[c]], where, c) for c in 'rgb')
        name = row[ncol] or ''
        for what, key in (('colour', color), ('id', value)):   # a shared one hides a class
            if (what, key) in seen:
                raise ValueError(f'{where}: {short(name)} has the {what} {key} of {short(seen[what, key])}; '
                                 f'each class needs its own {what}')
            seen[what, key] = name
        evaluated = (row.get(keys.get('evaluated', '')) or 'yes').strip().lower()
        if evaluated == 'no' or name.strip().lower() in ('void', 'unlabelled', 'unlabeled', 'ignore'):
            ignore, ignore_color = value, color
            continue
        names.append(name)
        colors.append(color)
        values.append(value)
    # here, naming the table: refused later, the error named the dataset.yaml the names were copied into
    if problem := control_character_problem(names, 'class names') or long_text_problem(names, 'class names'):
        raise ValueError(f'{path}: {problem}; write them as plain text, under 200 characters')
    return LabelClasses(names, colors, values, ignore, ignore_color)


def _byte(text: str | None, where: str, column: str) -> int:
    """One 0..255 cell of a class table (ids and colour components are 8-bit)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0 <= value <= 255:
        got = 'nothing (a short row)' if text is None else short(text)
        raise ValueError(f'{where}: {column} must be an integer 0..255, got {got}')
    return value


def colors_to_ids(rgb: np.ndarray, colors: list[tuple[int, int, int]],
                  ignore_index: int = DEFAULT_IGNORE) -> np.ndarray:
    """(H, W, 3) colour label -> (H, W) uint8 class index (position in ``colors``); others ignore."""
    return _colour_ids(rgb, colors, ignore_index)[0]


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) 8-bit RGB -> one int32 per colour."""
    rgb = np.asarray(rgb)
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


def _colour_ids(rgb: np.ndarray, colors, ignore_index: int, tolerance: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``colors_to_ids`` and the mask of pixels whose colour is in ``colors``; with ``tolerance``, a colour
    within it (in every channel) of exactly one class colour is that class (a JPEG-saved mask's shifted
    colours), and counts as in ``colors``."""
    packed = _pack(rgb)
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], np.int32)
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
    hit = keys[order][pos] == packed
    out = np.full(rgb.shape[:2], ignore_index, np.uint8)
    out[hit] = order[pos[hit]].astype(np.uint8)
    if tolerance and not hit.all():
        near = _nearest_class(packed[~hit], colors, tolerance)
        found = near >= 0
        miss = np.flatnonzero(~hit.ravel())
        out.ravel()[miss[found]] = near[found]
        hit.ravel()[miss[found]] = True
    return out, hit


def _nearest_class(packed: np.ndarray, colors, tolerance: int) -> np.ndarray:
    """For each packed colour: the class whose colour is within ``tolerance`` in every channel, -1 where none
    is or where two are (a tolerance wider than half the distance between two class colours)."""
    values, inverse = np.unique(packed, return_inverse=True)
    rgb = np.stack([values >> 16, (values >> 8) & 255, values & 255], axis=1)            # (U, 3)
    dist = np.abs(rgb[:, None, :] - np.array(colors, np.int32)[None]).max(axis=2)      # (U, K)
    close = dist <= tolerance
    cls = np.where(close.sum(axis=1) == 1, close.argmax(axis=1), -1)
    return cls[inverse.ravel()]


def _colour_list(packed: np.ndarray, most: int = 4) -> str:
    """The most frequent of ``packed`` colours as '(r, g, b), ...', most frequent first."""
    values, counts = np.unique(packed, return_counts=True)
    top = values[np.argsort(-counts, kind='stable')[:most]]
    more = f' and {len(values) - most} more' if len(values) > most else ''
    return ', '.join(f'({v >> 16}, {(v >> 8) & 255}, {v & 255})' for v in top.tolist()) + more


def ids_to_colors(ids: np.ndarray, colors: list[tuple[int, int, int]],
                  ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours for viewing."""
    lut = np.tile(np.array(ignore_color, np.uint8), (256, 1))
    lut[:len(colors)] = np.array(colors, np.uint8)
    return lut[ids]


def remap_lut(mapping: dict[int, int] | None, num_classes: int | None = None,
              ignore_index: int = DEFAULT_IGNORE, values: list[int] | None = None) -> np.ndarray:
    """(256,) lookup stored value -> class id, then ``mapping`` (stored value -> class id or ignore).

    With ``values`` (a class table's ids) value ``values[i]`` -> i and every other value -> ignore;
    else identity below ``num_classes`` (all values if None) and ignore above.
    """
    if not 0 <= ignore_index <= 255:
        raise ValueError(f'ignore_index {ignore_index}: labels are 8-bit, use a value 0..255 (e.g. 255)')
    if values is not None:
        lut = np.full(256, ignore_index, np.uint8)
        lut[values] = np.arange(len(values), dtype=np.uint8)
        num_classes = len(values)
    else:
        lut = np.arange(256, dtype=np.uint8)
        if num_classes is not None:
            lut[num_classes:] = ignore_index
    top = 255 if num_classes is None else num_classes - 1
    for src, dst in (mapping or {}).items():
        if not 0 <= src <= 255:
            raise ValueError(f'--map {src}:{dst}: {src} is not a label value (8-bit labels hold 0..255)')
        if not (0 <= dst <= top or dst == ignore_index):
            raise ValueError(f'--map {src}:{dst}: {dst} is neither a class id (0..{top}) nor the ignore value '
                             f'{ignore_index}')
        lut[src] = dst
    return lut


def load_label(path: str | Path, lut: np.ndarray | None = None, colors=None,
               ignore_index: int = DEFAULT_IGNORE) -> np.ndarray:
    """Read one label file as class ids: colour images via ``colors``, id images via ``lut``.

    Id images (grey, 8-bit, or 16-bit with every value 0..255; others are refused) go through ``lut``.
    A paletted PNG is an id image (its indices, as VOC / DAVIS / PIL write them) unless ``colors`` is
    given: then it is read by its palette's colours. Colour images (RGB) need ``colors``: a colour not
    among them becomes ``ignore_index``. 16-bit colour images are read when every value is an 8-bit one
    times 257 (as converters widen them) and refused otherwise. An alpha channel (RGBA, grey+alpha)
    makes fully transparent pixels (alpha 0) ``ignore_index``, whatever colour or id they hide; any
    other alpha keeps the pixel's colour / id. A grey+alpha PNG holds ids, like a grey one. A file with an
    EXIF orientation is turned as displayed, as its frame is (``data.images.read_label_pixels``).
    """
    return _read_label(path, lut, colors, ignore_index)[0]


def _png_kind(path: str | Path) -> str | None:
    """'grey', 'grey+alpha', 'colour', 'colour+alpha' or 'palette' from a PNG's IHDR; None for another file."""
    try:
        with open_regular(path) as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b'\x89PNG\r\n\x1a\n' or head[12:16] != b'IHDR':
        return None
    return _PNG_KINDS.get(head[25])


def _read_label(path: str | Path, lut: np.ndarray | None = None, colors=None, ignore_index: int = DEFAULT_IGNORE,
                known_color: tuple[int, int, int] | None = None, tolerance: int = 0) -> tuple[np.ndarray, float, str, np.ndarray]:
    """``load_label``, plus the share of visible pixels whose colour is neither in ``colors`` nor
    ``known_color`` (the table's ignore colour) and, above ``UNKNOWN_WARN``, the most frequent of
    those colours (id images: 0.0, ''); and, for id images, which of the stored values 0..255 the
    visible pixels hold ((256,) bool; colour images: none)."""
    img, palette = read_label_pixels(path)     # turned as displayed, as its frame is (see data/images.py)
    if img is None:
        raise FileNotFoundError(f'cannot read label file {path}')
    kind = _png_kind(path)
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):       # OpenCV reads a grey+alpha PNG as BGRA with B = G = R
        alpha = img[:, :, -1]
        img = img[:, :, 0] if img.shape[2] == 2 or kind == 'grey+alpha' else img[:, :, :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    visible = None if alpha is None else alpha != 0
    if kind == 'palette' and colors is None and palette:    # no colour table: the indices are the ids
        img = palette_indices(img, palette, ignore_index)
    elif colors is None and grey_in_colour(img) is not None:     # ids saved as RGB (1 -> (1, 1, 1))
        img = grey_in_colour(img)
    if img.ndim == 2:
        if Path(path).suffix.lower() in ('.jpg', '.jpeg'):
            raise ValueError(f'{clip(path)} is a grey JPEG: its class ids are shifted by the compression at every '
                             'edge, beyond repair; export id labels as PNG (only colour JPEG masks are taken, '
                             'with --color-tolerance)')
        raw = id_pixels_8bit(img, path)
        ids = lut[raw] if lut is not None else raw.copy()
        if visible is not None:
            ids[~visible] = ignore_index
        seen = np.bincount((raw if visible is None else raw[visible]).ravel(), minlength=256) > 0
        return ids, 0.0, '', seen
    rgb = cv2.cvtColor(_to_8bit(img, path, visible), cv2.COLOR_BGR2RGB)
    if colors is None:
        found = _colour_list(_pack(rgb if visible is None else rgb[visible]))
        if kind == 'palette':
            raise ValueError(f'{path} is a paletted PNG, which is read by its palette\'s colours (OpenCV expands '
                             'the palette), not by its indices: give a class table (--classes CSV) with those '
                             f'colours (found: {found})')
        raise ValueError(f'{path} is a colour image: pass a class table (--classes CSV) to map colours to ids '
                         f'(found: {found})')
    ids, hit = _colour_ids(rgb, colors, ignore_index, tolerance)
    stray = ~hit
    if known_color is not None:
        stray &= np.abs(rgb.astype(np.int16) - np.array(known_color, np.int16)).max(axis=2) > tolerance
    if visible is not None:
        ids[~visible] = ignore_index
        stray &= visible
    n_visible = int(visible.sum()) if visible is not None else stray.size
    share = float(stray.sum()) / n_visible if n_visible else 0.0
    return ids, share, _colour_list(_pack(rgb[stray]), 3) if share > UNKNOWN_WARN else '', np.zeros(256, bool)


def id_pixels_8bit(img: np.ndarray, path) -> np.ndarray:
    """A class-id image as 8-bit ids: 16-bit ones (as some tools and numpy scripts save them) are taken
    when every value fits 0..255, as training reads them (``layouts.read_label_file``); others refused."""
    if img.dtype == np.uint8:
        return img
    low, high = (int(img.min()), int(img.max())) if img.size else (0, 0)
    if img.dtype == np.uint16 and high <= 255:
        return img.astype(np.uint8)
    raise ValueError(f'{clip(path)}: label values {low}..{high} in a {img.dtype} image; class-id labels hold '
                     'ids 0..255 (8-bit); save them as 8-bit class ids')


def _to_8bit(img: np.ndarray, path, visible: np.ndarray | None) -> np.ndarray:
    """A colour label as 8-bit: 16-bit values that are 8-bit ones x 257 are scaled back; others refused."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        seen = img if visible is None else img[visible]
        if not np.any(seen % 257):
            return (img // 257).astype(np.uint8)
        raise ValueError(f'{path}: a 16-bit colour label whose values are not 8-bit colours (each a multiple of '
                         '257), so they match no class table colour (0..255); save the labels as 8-bit PNGs')
    raise ValueError(f'{path}: {img.dtype} colour label; expected 8-bit colours')


def write_label(path: str | Path, ids: np.ndarray) -> Path:
    """Class ids -> single-channel PNG, written atomically (a full disk is an OSError, the old file kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_image_atomic(path, np.asarray(ids, np.uint8), '.png')


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
    dropped = _dropped_values(lut, mapping, ignore_index, table.ignore_value if table else None)
    beyond: dict[int, Path] = {}                  # stored id values that became ignore unasked -> first file
    blank: list[Path] = []                        # labels without one class pixel
    palettes: list[list[tuple[int, int, int]]] = []   # of paletted labels read by index: the user's colours

    def load(file: Path) -> np.ndarray:
        ids, share, colours, seen = _read_label(file, lut, table.colors if table else None, ignore_index,
                                                table.ignore_color if table else None, tolerance)
        if share > UNKNOWN_WARN:
            stray.append((share, file, colours))
        for value in np.flatnonzero(seen & dropped).tolist():
            beyond.setdefault(value, file)
        present[np.unique(ids)] = True
        if not np.any(ids != ignore_index):
            blank.append(file)
        if table is None and not palettes and _png_kind(file) == 'palette':
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
                    table_ignore: int | None = None) -> np.ndarray:
    """(256,) bool: stored id values that ``lut`` makes ignore without being asked (no class of that id,
    not the ignore value itself or the class table's ignore row, not a ``--map`` to ignore)."""
    dropped = lut == ignore_index
    dropped[ignore_index] = False
    if table_ignore is not None:
        dropped[table_ignore] = False
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
                ', '.join(map(short, names[:12])) + (', ...' if len(names) > 12 else ''), f', and {", ".join(map(short, empty))} got no pixel in any label'
                if empty else '', 'class table' if table else '--class-names')


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


def same_class_names(a: list[str], b: list[str]) -> bool:
    """Whether two class lists name the same classes in the same order. Names compare without case and
    surrounding spaces ("Sky" is " sky"): the one rule for a teacher's classes, in labelling and training."""
    return len(a) == len(b) and [n.strip().lower() for n in a] == [n.strip().lower() for n in b]


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
        cands = by_stamp.get(f.stem, [])
        if len(cands) > 1:      # same stamp on two topics: the folder names the sequence
            cands = [r for r in cands if r.sequence == f.parent.name]
        if len(cands) == 1:
            pairs.append((cands[0], f))
        else:
            log.warning('label %s matches %d frames; skipped', f.relative_to(root), len(cands))
    return pairs


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
    for folder in sorted({real_path(Path(f).parent) for f in source_files if f}):
        if out == folder or out in folder.parents:
            raise ValueError(f'the output folder {clip(out)} holds {files_what} ({clip(folder)}); '
                             'give a new folder')
    held = [name for name in (INDEX_NAME, META_NAME) if (out / name).exists()]
    if held:
        raise ValueError(f'{clip(out)} already holds a dataset ({", ".join(held)}); give a new output folder '
                         '(or delete that one first)')


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
