"""Label files: class tables, colours <-> class ids, remapping, ignore values, reading and writing.

Labels on disk in a vidseg dataset are single-channel 8-bit PNGs of class ids, ``ignore_index``
(default 255) where unknown, at ``labels/<sequence>/<stamp_ns>.png``; ``dataset.yaml`` names the
classes. This module reads other people's label files as that: id PNGs with arbitrary values
(``remap_lut``), colour PNGs (a class table CSV like CamVid's ``classes.csv``), paletted PNGs; and
writes them. ``label_import`` runs ``vidseg label-import`` with it (a label folder into a dataset,
or whole CamVid / DAVIS / Cityscapes folders indexed in place).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.data.images import (clip, grey_in_colour, palette_index_pixels, read_label_pixels, short,
                                   write_image_atomic)
from vidseg_ros.data.datasets.layouts import (DEFAULT_IGNORE, INDEX_NAME, META_NAME, csv_says_where,
                                              not_utf8_says_where)
from vidseg_ros.text import control_character_problem, long_text_problem
from vidseg_ros.files import open_regular

UNKNOWN_WARN = 0.02     # share of a colour label's pixels in colours not in the table that earns a warning
_PNG_KINDS = {0: 'grey', 2: 'colour', 3: 'palette', 4: 'grey+alpha', 6: 'colour+alpha'}   # IHDR colour type


@dataclass
class LabelClasses:
    """Class names and display colours; ``values`` are the ids stored in label files."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    values: list[int]
    ignore_value: int | None = None     # stored value / colour row meaning "unlabelled" (the last such row)
    ignore_color: tuple[int, int, int] | None = None    # that row's colour (a known colour, not a stray one)
    # every ignore row's (Cityscapes-style tables have several: unlabeled, ego vehicle, ...)
    ignore_values: list[int] = field(default_factory=list)
    ignore_colors: list[tuple[int, int, int]] = field(default_factory=list)


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
    names, colors, values, ignore_values, ignore_colors, seen = [], [], [], [], [], {}
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
            ignore_values.append(value)
            ignore_colors.append(color)
            continue
        names.append(name)
        colors.append(color)
        values.append(value)
    # here, naming the table: refused later, the error named the dataset.yaml the names were copied into
    if problem := control_character_problem(names, 'class names') or long_text_problem(names, 'class names'):
        raise ValueError(f'{path}: {problem}; write them as plain text, under 200 characters')
    if not names:   # else every colour label failed with an IndexError
        raise ValueError(f'{path}: no class rows, only ignore rows (evaluated "no" or named void / unlabelled)')
    return LabelClasses(names, colors, values, (ignore_values or [None])[-1], (ignore_colors or [None])[-1],
                        ignore_values, ignore_colors)


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
    return read_label_with_stats(path, lut, colors, ignore_index)[0]


def png_kind(path: str | Path) -> str | None:
    """'grey', 'grey+alpha', 'colour', 'colour+alpha' or 'palette' from a PNG's IHDR; None for another file."""
    try:
        with open_regular(path) as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b'\x89PNG\r\n\x1a\n' or head[12:16] != b'IHDR':
        return None
    return _PNG_KINDS.get(head[25])


def read_label_with_stats(path: str | Path, lut: np.ndarray | None = None, colors=None,
                          ignore_index: int = DEFAULT_IGNORE, known_color: tuple[int, int, int] | None = None,
                          tolerance: int = 0) -> tuple[np.ndarray, float, str, np.ndarray]:
    """``load_label``, plus the share of visible pixels whose colour is neither in ``colors`` nor
    ``known_color`` (the table's ignore colour) and, above ``UNKNOWN_WARN``, the most frequent of
    those colours (id images: 0.0, ''); and, for id images, which of the stored values 0..255 the
    visible pixels hold ((256,) bool; colour images: none)."""
    img, palette = read_label_pixels(path)     # turned as displayed, as its frame is (see data/images.py)
    if img is None:
        raise FileNotFoundError(f'cannot read label file {path}')
    kind = png_kind(path)
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):       # OpenCV reads a grey+alpha PNG as BGRA with B = G = R
        alpha = img[:, :, -1]
        img = img[:, :, 0] if img.shape[2] == 2 or kind == 'grey+alpha' else img[:, :, :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    visible = None if alpha is None else alpha != 0
    if kind == 'palette' and colors is None and palette:    # no colour table: the indices are the ids
        img = palette_index_pixels(path, img, palette, ignore_index)
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
    if known_color is not None and len(known_color):     # one colour, or a list of them (every ignore row)
        for known in np.array(known_color, np.int16).reshape(-1, 3):
            stray &= np.abs(rgb.astype(np.int16) - known).max(axis=2) > tolerance
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


def same_class_names(a: list[str], b: list[str]) -> bool:
    """Whether two class lists name the same classes in the same order. Names compare without case and
    surrounding spaces ("Sky" is " sky"): the one rule for a teacher's classes, in labelling and training."""
    return len(a) == len(b) and [n.strip().lower() for n in a] == [n.strip().lower() for n in b]
