"""Bags -> all-frame image datasets: ``images/<sequence>/<stamp_ns>.png`` plus ``index.csv``.

Every message of the chosen image topics (raw ``Image`` in any supported encoding, or
``CompressedImage``) becomes one file, in stamp order per topic (``stamp_order``: a frame that arrived a little
late takes its place). Sequences split where the stamps jump by more than ``max_gap_s`` (or go back by more, or
past frames already written) and where the frame size changes (read from the message header, no decoding), so a
sequence is a run of same-size frames; ``index`` is the frame's position in its
sequence *before* ``every`` subsampling, so temporal distances stay true. Files are written to a
temporary name and renamed, so an interrupted run leaves no half files and a re-run skips what
exists. Locally, decoding and encoding run in worker processes and the main process only reads the
bags and plans file names (a frame's size comes from its message header); on a Dask cluster
(``executor='dask'``) each bag is one task (``data.executors``).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import re
import struct
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, as_completed, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from rosbags.serde import SerdeError

from vidseg_ros.config import setting
from vidseg_ros.data.bags.reader import (IMAGE_TYPES, ROS1_SUFFIXES, STORAGE_SUFFIXES, RawMessage, bag_files,
                                         deserialize, has_suffix, read_messages)
from vidseg_ros.data.executors import check_executor, task_executor
from vidseg_ros.data.exif import kept_frame_bytes
from vidseg_ros.data.images import (ImageError, compressed_size, decode_compressed, image_fields_to_rgb8,
                                    write_file_atomic, write_image_atomic)
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.data.datasets.stamp_order import REORDER_FRAMES, StampOrder
from vidseg_ros.data.datasets.layouts import (EXTRACTING_NAME, INDEX_NAME, FrameRecord, read_index, read_meta,
                                              write_index, write_meta)
from vidseg_ros.engine.outputs import OUTPUTS
from vidseg_ros.text import clip, short

log = logging.getLogger(__name__)
FORMATS = ('png', 'jpg', 'keep')
BAG_SUFFIXES = STORAGE_SUFFIXES + ROS1_SUFFIXES
# segment_node's image outputs (<node>/mask, .../overlay, ...): recorded to review a drive, but class ids and
# renderings are not camera frames, so "every image topic" leaves them out unless --topic names them.
SEGMENTER_OUTPUTS = frozenset(o.name for o in OUTPUTS)


def is_segmenter_output(topic: str) -> bool:
    """True for a topic named like one of segment_node's image outputs (its last name component)."""
    return topic.rstrip('/').rpartition('/')[2] in SEGMENTER_OUTPUTS


@dataclass
class ExtractConfig:
    """Settings of ``vidseg extract``."""

    topics: list[str] = setting([], 'Image topics to extract; empty = every Image/CompressedImage topic '
                                    'but segment_node\'s outputs (mask, overlay, ...)')
    image_format: str = setting('png', 'png (lossless), jpg, or keep (a CompressedImage\'s PNG / JPEG bytes '
                                       'written unchanged; other frames as png)', FORMATS)
    jpeg_quality: int = setting(95, 'JPEG quality when image_format is jpg')
    every: int = setting(1, 'Keep every N-th frame of each sequence')
    start_s: float = setting(0.0, 'Skip frames earlier than this many seconds after the first frame')
    stop_s: float = setting(0.0, 'Stop this many seconds after the first frame; 0 = to the end')
    max_gap_s: float = setting(0.5, 'A stamp gap larger than this (or a step back larger than this) starts a new '
                                    f'sequence; a frame up to {REORDER_FRAMES} frames late, less than this, takes '
                                    'its place')
    stamp: str = setting('header', 'Frame time: header stamp (falls back to the log time when zero) '
                                   'or bag log time', ('header', 'log'))
    workers: int = setting(1, 'Decode/encode worker processes (1 = in this process)')


@dataclass
class ExtractResult:
    """Counts of one extraction run."""

    written: int = 0
    skipped_existing: int = 0
    failed: int = 0
    duplicates: int = 0
    exif_reset: int = 0         # kept frames whose EXIF orientation was set to 1 (data.exif)
    exif_reencoded: int = 0     # kept frames encoded again for an orientation that could not be reset
    bytes_written: int = 0
    image_messages: int = 0     # image messages read (frames kept or not)
    selected: int = 0           # image messages inside the start_s/stop_s range
    sequences: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    empty_bags: list[str] = field(default_factory=list)      # why a bag gave no frame (also in warnings)
    skipped_topics: list[str] = field(default_factory=list)   # segment_node outputs left out
    first_failure: str = ''     # why the first frame that failed did (the error when every frame failed)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return self.written + self.skipped_existing

    def add(self, other: 'ExtractResult') -> None:
        """Counts of another part of the same run (a bag done elsewhere)."""
        for name in ('written', 'skipped_existing', 'failed', 'duplicates', 'exif_reset', 'exif_reencoded',
                     'bytes_written', 'image_messages', 'selected'):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.warnings.extend(other.warnings)
        self.empty_bags.extend(other.empty_bags)
        self.first_failure = self.first_failure or other.first_failure
        self.skipped_topics = sorted(set(self.skipped_topics) | set(other.skipped_topics))


def header_stamp_ns(msg: RawMessage) -> int:
    """``header.stamp`` read straight from the serialized bytes (first field of Image types)."""
    if len(msg.data) < 12:
        return 0
    if msg.fmt == 'cdr':        # 4-byte encapsulation header; byte 1 says little (1) or big (0) endian
        sec, nsec = struct.unpack_from('<iI' if msg.data[1] == 1 else '>iI', msg.data, 4)
    else:                       # ROS 1 Header: uint32 seq, then the stamp
        sec, nsec = struct.unpack_from('<II', msg.data, 4)
    return sec * 1_000_000_000 + nsec


def frame_hw(msg: RawMessage) -> tuple[int, int] | None:
    """(height, width) of an image message without decoding the image: rosbags deserializes the fields as
    views of the bytes (10 us for a 640x480 frame), a ``CompressedImage``'s size comes from its PNG / JPEG / WebP
    / BMP header; None when they do not say (another compressed format, damaged bytes)."""
    try:
        m = deserialize(msg)
        if msg.msgtype.endswith('CompressedImage'):
            payload = memoryview(m.data)
            if 'compressedDepth' in m.format:           # a 12-byte depth header before the PNG
                payload = payload[12:]
            return tuple(compressed_size(payload)[1:])
        return int(m.height), int(m.width)
    except (SerdeError, ImageError, ValueError, IndexError):
        return None


def _slug(topic: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '_', topic).strip('_') or 'image'


def _topic_hash(topic: str) -> str:
    return hashlib.sha1(topic.encode()).hexdigest()[:8]


# A sequence name is a folder name (images/<sequence>/, labels/<sequence>/): at most 255 bytes, and names made
# from it need room too (make-variant's <sequence>_<index>_noise), so a longer one is shortened.
MAX_SEQUENCE_BYTES = 200


def _sequence_name(name: str, part: str, seg: int) -> str:
    """``<bag name>_<topic part>_<NNN>``; over ``MAX_SEQUENCE_BYTES`` (a long bag or topic name), the
    ``<bag name>_<topic part>`` is cut and ends in ``-<8 hex digits of it>``: the same name in every run,
    another for every other bag name and topic."""
    base, tail = f'{name}_{part}', f'_{seg:03d}'
    raw = base.encode('utf-8', 'surrogateescape')
    if len(raw) + len(tail) <= MAX_SEQUENCE_BYTES:
        return base + tail
    cut = raw[:MAX_SEQUENCE_BYTES - len(tail) - 9].decode('utf-8', 'ignore')
    return f'{cut}-{hashlib.sha1(raw).hexdigest()[:8]}{tail}'


def _topic_parts(topic: str) -> tuple[str, str]:
    """The two names a topic's part of its sequence names can have: its slug, or the slug and its hash."""
    return _slug(topic), f'{_slug(topic)}-{_topic_hash(topic)}'


def _is_sequence_of(seq: str, name: str, part: str) -> bool:
    """Whether ``seq`` is a sequence of bag ``name`` and topic ``part`` (shortened or not)."""
    m = re.fullmatch(r'.+_(\d+)', seq)
    return bool(m) and _sequence_name(name, part, int(m[1])) == seq


def _topic_part(name: str, rec: FrameRecord) -> str | None:
    """The part of ``rec``'s sequence name that stands for its topic, if it is one of bag ``name``'s
    (``<name>_<topic slug>[-<8 hex digits>]_<NNN>``, or that name shortened)."""
    m = re.fullmatch(rf'{re.escape(name)}_({re.escape(_slug(rec.topic))}(?:-[0-9a-f]{{8}})?)_\d+', rec.sequence)
    if m:
        return m[1]
    return next((p for p in _topic_parts(rec.topic) if _is_sequence_of(rec.sequence, name, p)), None)


# A CompressedImage format as the index's encoding column keeps it ("bgr8; jpeg compressed bgr8" is 26).
FORMAT_CELL = 64


def format_cell(text: str) -> str:
    """A CompressedImage's ``format``, free text of the recording's publisher, as the index stores it: its
    control characters escaped and cut to ``FORMAT_CELL`` characters. Raw, a format of ESC sequences, line breaks
    and 100 kB went into every row of index.csv (100 kB a frame), and to the terminal of whoever read it."""
    return clip(text, FORMAT_CELL) if text else 'compressed'


def decode_message(msg: RawMessage) -> tuple[np.ndarray, str, bytes | None]:
    """-> (RGB frame, source encoding (a format: ``format_cell``), compressed payload or None)."""
    m = deserialize(msg)
    if msg.msgtype.endswith('CompressedImage'):
        data = bytes(m.data)
        return decode_compressed(m.format, data), format_cell(m.format), data
    return image_fields_to_rgb8(m.encoding, m.height, m.width, m.step, m.data, m.is_bigendian), m.encoding, None


def _write_job(job: tuple) -> tuple[int, str, str, str]:
    """Worker: decode one message and write its file atomically -> (bytes, encoding, error, EXIF action:
    ``data.exif.kept_frame_bytes``)."""
    msg, path, fmt, quality = job
    path = Path(path)
    oriented = ''
    try:
        if fmt == 'keep' and msg.msgtype.endswith('CompressedImage'):
            # Bytes as recorded: no decode, no re-encode, nothing lost; but an EXIF orientation is reset, as
            # the node ignores it and every file reader would turn the frame
            m = deserialize(msg)
            encoding = format_cell(m.format)
            data, oriented = kept_frame_bytes(bytes(m.data), m.format, path.suffix, quality)
            write_file_atomic(path, data, fsync=False)   # frames can be extracted again: no fsync
        else:
            rgb, encoding, _ = decode_message(msg)
            params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == '.jpg' else \
                [cv2.IMWRITE_PNG_COMPRESSION, 1]
            try:
                write_image_atomic(path, rgb[:, :, ::-1], params=params, fsync=False)
            except ImageError:
                return 0, encoding, f'cannot encode {path.name}', ''
        return path.stat().st_size, encoding, '', oriented
    except OSError as e:        # disk full / permissions: stop, do not skip frames silently (no half file left)
        raise _write_error(e, path) from e
    except Exception as e:  # noqa: BLE001 - one damaged message must not stop the run
        return 0, '', f'{type(e).__name__}: {clip(e, 1000)}', ''    # it may quote the message's own fields


# Errors that free space (or a higher file size limit) fixes; a re-run then resumes.
_NO_ROOM = {errno.ENOSPC: 'free some space', errno.EDQUOT: 'free some space (disk quota)',
            errno.EFBIG: 'free some space or raise the file size limit (ulimit -f)'}


def _write_error(e: OSError, path: Path) -> OSError:
    """``e`` naming the frame file it failed on, with what to do when the disk is full."""
    hint = _NO_ROOM.get(e.errno)
    reason = e.strerror or str(e)
    if hint:
        reason += f'; {hint}, then re-run: extraction resumes where it stopped'
    return OSError(e.errno, reason, str(path))


def _kept(msg: RawMessage, fmt: str) -> bool:
    """Whether ``--image-format keep`` writes this message's bytes as recorded: a CompressedImage holding a PNG or
    JPEG (or a compressedDepth PNG). Other formats the node decodes (WebP, BMP) are decoded and written as PNG, the
    frame the node sees: a WebP's EXIF orientation, which file readers apply, cannot be reset in place. Bytes no
    header makes an image of are a failed frame (they were written as a .jpg and counted as extracted)."""
    if fmt != 'keep' or not msg.msgtype.endswith('CompressedImage'):
        return False
    m = deserialize(msg)
    if 'compresseddepth' in str(m.format).lower():
        return True
    try:
        return compressed_size(memoryview(m.data))[0] in ('png', 'jpeg')
    except ImageError:
        return False


def _suffix(msg: RawMessage, fmt: str) -> str:
    if _kept(msg, fmt):
        # The format string is in the message; peek cheaply by deserialising only when needed. compressedDepth
        # is a PNG kept without its depth header, also where the format does not say png ("16UC1; compressedDepth")
        fmt_text = str(deserialize(msg).format).lower()
        return '.png' if 'png' in fmt_text or 'compresseddepth' in fmt_text else '.jpg'
    return '.jpg' if fmt == 'jpg' else '.png'


class _Planner:
    """Assigns sequences, indices and output paths in bag order (main process only).

    Each topic's sequences are named ``<bag name>_<topic slug>_<NNN>``. Topics whose slugs collide
    (``/cam/a_b`` and ``/cam_a/b``) would share their sequences and files: of the bag's image topics
    with one slug, the first by name keeps it and the others get ``<slug>-<8 hex digits of the topic>``,
    so the name does not depend on the order of the messages or on ``--topic``; a topic already in the
    dataset keeps the name it has there, so re-runs resume.

    Args:
        found: the bag's topics (topic -> msgtype) as its reader lists them, filled as the bag is read.
        old_rows: this bag's rows already in the dataset.
    """

    def __init__(self, cfg: ExtractConfig, bag: Path, name: str, out: Path, result: ExtractResult,
                 found: dict[str, str] | None = None, old_rows=()):
        self.cfg, self.bag, self.name, self.out, self.result = cfg, bag, name, out, result
        self.state: dict[str, dict] = {}       # topic -> last stamp, segment, position, t0, frame size
        self.order: dict[str, StampOrder] = {}  # topic -> its frames held to restore stamp order
        self.span_s = 0.0                      # the latest frame, seconds after its topic's first
        self.found = found if found is not None else {}
        self.parts: dict[str, str] = {}        # topic -> its part of the sequence names
        self.owner: dict[str, str] = {}        # that part -> its topic
        self.shortened: set[str] = set()       # topics whose sequence names were shortened (logged once)
        # (topic, stamp) -> the files of this bag's frames in the dataset, and how often each was planned now
        self.indexed: dict[tuple[str, int], list[Path]] = {}
        self.planned: dict[tuple[str, int], int] = {}
        for r in sorted(old_rows, key=lambda r: (r.sequence, r.index)):
            self.indexed.setdefault((r.topic, r.stamp_ns), []).append(r.image)
        for r in old_rows:
            part = _topic_part(name, r)
            # a part two topics share (a dataset made before topics were kept apart): the first keeps it
            if part and r.topic not in self.parts and self.owner.setdefault(part, r.topic) == r.topic:
                self.parts[r.topic] = part

    def _part(self, topic: str) -> str:
        part = self.parts.get(topic)
        if part is not None:
            return part
        plain = _slug(topic)
        rivals = sorted(t for t, ty in self.found.items()
                        if ty in IMAGE_TYPES and _slug(t) == plain and t not in self.parts)
        first = min(rivals + [topic])
        part = plain if plain not in self.owner and first == topic else f'{plain}-{_topic_hash(topic)}'
        if part != plain:
            log.info('extract: topics %s share the name %s: the sequences of %s are named %s_%s_...',
                     ', '.join(sorted({topic, *rivals, *(t for t, p in self.parts.items() if p == plain)}))[:300],
                     plain[:200], topic[:200], self.name[:200], part[:200])
        self.parts[topic], self.owner[part] = part, topic
        return part

    def plan(self, msg: RawMessage) -> list[tuple[FrameRecord, Path, RawMessage]]:
        """Take the bag's next image message; -> the frames to write now (with their messages), in stamp order
        per topic: ``StampOrder`` holds a few of each topic's frames to put one that arrived late in its place."""
        stamp = header_stamp_ns(msg) if self.cfg.stamp == 'header' else 0
        stamp = stamp or msg.log_time_ns
        order = self.order.get(msg.topic)
        if order is None:
            order = self.order[msg.topic] = StampOrder(REORDER_FRAMES, self.cfg.max_gap_s)
        return self._placed(order.push(stamp, msg))

    def flush(self) -> list[tuple[FrameRecord, Path, RawMessage]]:
        """The frames still held, at the end of the bag."""
        return [p for order in self.order.values() for p in self._placed(order.drain())]

    def _placed(self, released) -> list[tuple[FrameRecord, Path, RawMessage]]:
        return [(*p, msg) for stamp, msg in released if (p := self._place(stamp, msg)) is not None]

    def _place(self, stamp: int, msg: RawMessage) -> tuple[FrameRecord, Path] | None:
        """A frame's sequence, index and file, in stamp order of its topic; None for one not kept."""
        cfg = self.cfg
        st = self.state.setdefault(msg.topic, {'last': None, 'seg': -1, 'pos': 0, 't0': stamp, 'hw': None})
        rel = (stamp - st['t0']) / 1e9
        self.span_s = max(self.span_s, rel)
        # a frame stamped before the first (sim time reset, another recording) is before --start-s only when one
        # was given: without, every such frame was dropped, counted nowhere
        if (cfg.start_s > 0 and rel < cfg.start_s) or (cfg.stop_s > 0 and rel >= cfg.stop_s):
            return None
        self.result.selected += 1
        if st['last'] is not None and stamp == st['last']:
            self.result.duplicates += 1
            return None
        hw = frame_hw(msg)      # a new size starts a new sequence: flow, propagation, temporal metrics need one
        resized = hw is not None and st['hw'] is not None and hw != st['hw']
        if st['last'] is None or stamp < st['last'] or (stamp - st['last']) / 1e9 > cfg.max_gap_s or resized:
            st['seg'], st['pos'] = st['seg'] + 1, 0
            if resized:
                log.info('extract: %s changes frame size at %d (%dx%d -> %dx%d): a new sequence starts',
                         msg.topic[:200], stamp, st['hw'][1], st['hw'][0], hw[1], hw[0])
        st['last'], st['hw'] = stamp, hw or st['hw']
        pos = st['pos']
        st['pos'] += 1
        if pos % max(1, cfg.every):
            return None
        part = self._part(msg.topic)
        seq = _sequence_name(self.name, part, st['seg'])
        if seq != f'{self.name}_{part}_{st["seg"]:03d}' and msg.topic not in self.shortened:
            self.shortened.add(msg.topic)
            log.info('extract: the sequence names of %s in %s would be over %d bytes: shortened to %s',
                     msg.topic[:200], str(self.bag)[:200], MAX_SEQUENCE_BYTES, seq)
        path = self.out / 'images' / seq / f'{stamp}{_suffix(msg, cfg.image_format)}'
        path = self._indexed_as(msg.topic, stamp, path)
        rec = FrameRecord(seq, pos, path, None, stamp, 'none', str(self.bag), msg.topic, '')
        return rec, path

    def _indexed_as(self, topic: str, stamp: int, path: Path) -> Path:
        """``path``, or the file the dataset already has for this frame in another sequence: one extracted before
        frames that arrived late were put in their place has them in sequences of their own, and writing them
        again in the sequence they now belong to stored them twice. The n-th frame of a stamp (a looped bag
        repeats stamps) is the n-th the dataset has."""
        if not self.indexed:
            return path
        n = self.planned.get((topic, stamp), 0)
        self.planned[(topic, stamp)] = n + 1
        files = self.indexed.get((topic, stamp), ())
        old = files[n] if n < len(files) else path
        if old != path and old.suffix == path.suffix and not path.is_file() and old.is_file():
            return old
        return path


def _bag_key(bag: str | Path) -> str:
    return os.path.realpath(bag)


def _sequence_names(bags: list[Path], old_rows) -> list[str]:
    """The name each bag's sequences start with (``<name>_<topic>_<NNN>``).

    A bag is named after its folder or file, unless another bag of that name (earlier in this run,
    or already in the dataset's ``old_rows``) holds that name: then ``<name>-<8 hex digits of its
    path>``, so the ``drive`` bags of two days never share a sequence or a file name (same stamps
    would make the second skip as "existing" and be lost). A bag already in the dataset keeps the
    name it got there, so re-runs resume whatever the order of the bags.
    """
    owner: dict[str, str] = {}      # name -> the bag (path key) holding it
    known: dict[str, str] = {}      # bag key -> its name in the dataset
    unresolved: dict[str, str] = {}     # bag file/folder name -> its name in the dataset, see below
    keys: dict[str, str] = {}       # a row's bag -> its real path (resolved once per bag, not per row)
    for r in old_rows:
        m = re.fullmatch(rf'(.+)_{re.escape(_slug(r.topic))}(?:-[0-9a-f]{{8}})?_\d+', r.sequence)
        name = m[1] if m else _shortened_bag_name(r) if r.bag else None
        if name and r.bag:
            key = keys.get(r.bag) or keys.setdefault(r.bag, _bag_key(r.bag))
            owner.setdefault(name, key)
            known.setdefault(key, name)
            if not os.path.isabs(r.bag) and not os.path.exists(r.bag):
                # written before bag paths were stored absolute, from another folder: known by name only
                unresolved.update(dict.fromkeys((Path(r.bag).stem, Path(r.bag).name, _bag_stem(r.bag)), name))
    names = []
    for bag in bags:
        key, plain = _bag_key(bag), _bag_stem(bag) if bag.is_file() else bag.name
        name = known.get(key)
        if name is None and plain in unresolved:
            name = known[key] = unresolved[plain]
            unresolved = {k: v for k, v in unresolved.items() if v != name}
            log.warning('extract: %s is taken for the bag %s already in the dataset (its index names that bag by '
                        'a path relative to another folder): frames already there are skipped',
                        str(bag)[:200], name[:200])
        if name is None:
            name = plain if owner.setdefault(plain, key) == key else \
                f'{plain}-{hashlib.sha1(key.encode()).hexdigest()[:8]}'
            owner.setdefault(name, key)
            if name != plain:
                log.info('extract: another bag named %s is in this run or dataset: the sequences of %s are '
                         'named %s_...', plain[:200], str(bag)[:200], name[:200])
        names.append(name)
    return names


def _bag_stem(bag: str | Path) -> str:
    """A bag file's name without its suffixes: ``drive`` of ``drive.bag.active`` and ``drive.mcap.zstd`` as of
    ``drive.bag`` (a bag reindexed or decompressed later keeps its sequence names: its frames are skipped)."""
    name = Path(bag).name
    suffix = next((x for x in sorted(BAG_SUFFIXES, key=len, reverse=True) if name.lower().endswith(x)), '')
    return name[:len(name) - len(suffix)] if suffix and len(name) > len(suffix) else Path(bag).stem


def _shortened_bag_name(rec: FrameRecord) -> str | None:
    """The bag name of a row whose sequence name was shortened (``_sequence_name``): of the names its bag can
    have (its own, or with the hash of its path), the one that gives that sequence name."""
    bag = Path(rec.bag)
    plains = {bag.stem, bag.name, _bag_stem(bag)}
    names = [*plains, *(f'{p}-{hashlib.sha1(_bag_key(bag).encode()).hexdigest()[:8]}' for p in plains)]
    return next((n for n in names for p in _topic_parts(rec.topic) if _is_sequence_of(rec.sequence, n, p)), None)


def extract(bags: list[str | Path], out: str | Path, cfg: ExtractConfig | None = None,
            progress: Callable[[int], None] | None = None, executor: str = 'local',
            address: str = '') -> ExtractResult:
    """``vidseg extract``: every frame of the image topics of ``bags`` into dataset folder ``out``.

    Args:
        bags: rosbag2 folders, ``.mcap``/``.db3`` files or ROS 1 ``.bag`` files.
        out: dataset folder (created; an existing one is resumed and its labels kept).
        cfg: topics, format, subsampling, gap splitting, workers.
        progress: called with the number of frames finished since the last call.
        executor: ``local`` (frames decoded by ``cfg.workers`` local processes) or ``dask`` (one task
            per bag on a Dask cluster; see ``data.executors``); the files and index are the same.
        address: Dask scheduler address; empty = a local Dask cluster of ``cfg.workers`` processes.
    """
    cfg = cfg or ExtractConfig()
    check_executor(executor, cfg.workers, address)
    for bag in bags:
        check_bag(bag)
    out = Path(out)
    with dataset_lock(out, create=True):    # two runs at once: the one ending last dropped the other's rows
        return _extract_locked(bags, out, cfg, progress, executor, address)


def _extract_locked(bags: list[str | Path], out: Path, cfg: ExtractConfig, progress, executor: str,
                    address: str) -> ExtractResult:
    """``extract`` once ``out`` is locked."""
    (out / 'images').mkdir(exist_ok=True)
    result = ExtractResult()
    marker = out / EXTRACTING_NAME
    if marker.exists():
        log.info('%s: completing an extract that did not finish', short(out))
    old = {r.image: r for r in read_index(out, warn_incomplete=False)} if (out / INDEX_NAME).is_file() else {}
    write_file_atomic(marker, ('\n'.join(str(b) for b in bags) + '\n').encode(errors='surrogateescape'))
    rows: dict[Path, FrameRecord] = dict(old)
    # absolute: the index's bag column is how a later run, from any folder, knows a bag is already in
    paths = [Path(os.path.abspath(b)) for b in bags]
    named = list(zip(paths, _sequence_names(paths, old.values())))
    t_start = time.perf_counter()
    try:
        with task_executor(executor, cfg.workers, address) as pool:
            if executor == 'local':
                pending: dict = {}
                by_bag = _rows_by_bag(old.values())
                for bag, name in named:
                    _extract_bag(bag, name, out, cfg, rows, result, pool, pending, progress,
                                 by_bag.get(_bag_key(bag), []))
                while pending:
                    _drain(pending, result, rows, progress, FIRST_COMPLETED)
            else:
                _extract_on_cluster(pool, named, out, cfg, old, rows, result, progress)
    finally:
        records = [r for r in rows.values() if Path(r.image).is_file()]
        if records or old:
            write_index(out, records)
            _update_fps(out, records)
        else:   # no frame written: leave no empty dataset that later commands would take for one
            marker.unlink(missing_ok=True)
            try:
                (out / 'images').rmdir()      # only if empty; the lock removes a new output folder left empty
            except OSError:
                pass
    # every bag read to its end: the index is whole (not reached on Ctrl-C, a kill or a failure)
    marker.unlink(missing_ok=True)
    if not result.selected:     # nothing to extract in any bag: an error, saying why for each bag
        raise ValueError('; '.join(result.empty_bags))
    if result.failed and not result.frames:     # every frame undecodable (an H.264 or GIF stream): exit 0 with
        raise ValueError(f'no frame extracted: all {result.failed} frame(s) failed to decode; the first: '   # none
                         f'{result.first_failure}')
    for text in result.empty_bags:
        log.warning('%s', text[:1000])     # topic names come from the bag
    for r in rows.values():
        result.sequences[r.sequence] = result.sequences.get(r.sequence, 0) + 1
    result.skipped_topics.sort()
    result.seconds = time.perf_counter() - t_start
    if result.failed or result.warnings:
        log.warning('extract: %d frame(s) failed to decode, %d bag warning(s)', result.failed,
                    len(result.warnings))
    return result


def check_bag(bag: str | Path) -> None:
    """Refuse what is not a bag (a video, an image folder) before any work is done."""
    for file in bag_files(bag):
        if not has_suffix(file, BAG_SUFFIXES):
            raise ValueError(f'{bag} is not a bag: expected a rosbag2 folder, .mcap, .db3 (or .mcap.zstd, .db3.zstd) '
                             'or a ROS 1 .bag (or .bag.active) (for a video or image folder use '
                             '`vidseg bag-from-frames`)')


def _rows_by_bag(old_rows) -> dict[str, list[FrameRecord]]:
    """The dataset's rows by the real path of their bag. Each bag looked for its rows among all of them, resolving
    every row's bag path anew: 800 bags of 3 frames took 60 s in realpath alone, growing with bags x rows."""
    keys: dict[str, str] = {}
    out: dict[str, list[FrameRecord]] = {}
    for r in old_rows:
        if r.bag:
            key = keys.get(r.bag)
            if key is None:
                key = keys[r.bag] = _bag_key(r.bag)
            out.setdefault(key, []).append(r)
    return out


def _extract_bag(bag: Path, name: str, out: Path, cfg: ExtractConfig, rows: dict, result: ExtractResult, pool,
                 pending: dict, progress, mine: list[FrameRecord]) -> None:
    """Plan and write every frame of one bag (``mine``: its rows already in the dataset); with a ``pool``,
    decoding runs in its processes."""
    found: dict[str, str] = {}     # every topic of the bag, for the message when it has no image
    planner = _Planner(cfg, bag, name, out, result, found, mine)
    seen, selected = 0, result.selected

    def write(planned) -> None:
        for rec, path, frame in planned:
            _write_frame(frame, rec, path, cfg, rows, result, pool, pending, progress)
    try:
        for msg in _camera_messages(bag, cfg, result, found):
            seen += 1
            result.image_messages += 1
            write(planner.plan(msg))
    except Exception:       # a reader failure: the frames read before it are written, as they were without holding
        write(planner.flush())
        raise
    write(planner.flush())
    if not seen:
        _empty_bag(result, _no_images(bag, cfg.topics, found))
    elif result.selected == selected:
        _empty_bag(result, f'{bag}: no frame from {cfg.start_s:g} s' +
                   (f' to {cfg.stop_s:g} s' if cfg.stop_s else '') +
                   f' after the first (--start-s/--stop-s); its image topics span {planner.span_s:.2f} s')


def _camera_messages(bag: Path, cfg: ExtractConfig, result: ExtractResult, found: dict[str, str]):
    """The bag's image messages to extract: of ``cfg.topics``, or every image topic but segment_node's outputs."""
    for msg in read_messages(bag, cfg.topics or None, warnings=result.warnings, found=found):
        if msg.msgtype not in IMAGE_TYPES:
            continue
        if not cfg.topics and is_segmenter_output(msg.topic):
            if msg.topic not in result.skipped_topics:
                result.skipped_topics.append(msg.topic)
                log.info('extract: %s looks like a segment_node output, not a camera: left out '
                         '(--topic %s extracts it)', msg.topic[:200], msg.topic[:200])
            continue
        yield msg


def _write_frame(msg: RawMessage, rec: FrameRecord, path: Path, cfg: ExtractConfig, rows: dict,
                 result: ExtractResult, pool, pending: dict, progress) -> None:
    """Write one planned frame (or skip it where its file exists); with a ``pool``, in its processes."""
    if path.is_file() and path.stat().st_size > 0:
        result.skipped_existing += 1
        if path not in rows:   # written by a run that died before its index: index it as it would have
            rows[path] = replace(rec, encoding=_message_encoding(msg))
        if progress:
            progress(1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = _kept(msg, cfg.image_format)
    job = (msg, str(path), 'keep' if kept else 'png' if cfg.image_format == 'keep' else cfg.image_format,
           cfg.jpeg_quality)
    # Stored-as-recorded bytes need no decoding: shipping them to a worker costs more.
    if pool is None or kept:
        _collect(result, rows, rec, path, _write_job(job), progress)
        return
    pending[pool.submit(_write_job, job)] = (rec, path)
    # Bounded window: never hold more than a few frames per worker in memory.
    while len(pending) >= 4 * cfg.workers:
        _drain(pending, result, rows, progress, FIRST_COMPLETED)


def _empty_bag(result: ExtractResult, text: str) -> None:
    """A bag that gave no frame: logged at the end, once, as a warning (or the error when no bag gave any)."""
    result.empty_bags.append(text)
    result.warnings.append(text)


def _bag_task(bag: str, name: str, out: str, cfg: ExtractConfig, old_rows: dict) -> tuple[dict, ExtractResult]:
    """One bag as a cluster task: its frames written, its index rows and counts returned."""
    rows, result = dict(old_rows), ExtractResult()
    _extract_bag(Path(bag), name, Path(out), cfg, rows, result, None, {}, None, list(old_rows.values()))
    return rows, result


def _extract_on_cluster(pool, bags: list[tuple[Path, str]], out: Path, cfg: ExtractConfig, old: dict, rows: dict,
                        result: ExtractResult, progress) -> None:
    """One task per (bag, sequence name); each bag's rows are merged as it finishes (bags never share a
    file), so a bag that fails later leaves the finished ones indexed."""
    by_bag: dict[str, dict] = {}      # each bag's rows, found once (not bags x rows)
    for p, r in old.items():
        by_bag.setdefault(r.bag, {})[p] = r
    futures = [pool.submit(_bag_task, str(bag), name, str(out), cfg, by_bag.get(str(bag), {})) for bag, name in bags]
    for fut in as_completed(futures):
        bag_rows, bag_result = fut.result()
        rows.update(bag_rows)
        result.add(bag_result)
        if progress:
            progress(bag_result.frames + bag_result.failed)


def _message_encoding(msg: RawMessage) -> str:
    """The encoding column of a frame, read from its message without decoding the image."""
    m = deserialize(msg)
    return format_cell(m.format) if msg.msgtype.endswith('CompressedImage') else clip(m.encoding, FORMAT_CELL)


def _no_images(bag: Path, topics: list[str], found: dict[str, str]) -> str:
    """Why ``bag`` gave no image, from the topics its read ``found`` (the bag is not read again)."""
    images = sorted(t for t, ty in found.items() if ty in IMAGE_TYPES)
    text = (f'{bag}: no image messages' + (f' on {", ".join(topics)}' if topics else '') +
            f'; image topics in this bag: {", ".join(images) or "none"}')
    outputs = [t for t in images if is_segmenter_output(t)]
    if outputs and not topics:
        text += f' ({", ".join(outputs)}: segment_node outputs, left out unless named with --topic)'
    return text


def _drain(pending: dict, result, rows, progress, how) -> None:
    done, _ = wait(list(pending), return_when=how)
    for fut in done:
        rec, path = pending.pop(fut)
        _collect(result, rows, rec, path, fut.result(), progress)


def _collect(result: ExtractResult, rows: dict, rec: FrameRecord, path: Path, outcome, progress) -> None:
    nbytes, encoding, error, oriented = outcome
    if oriented:
        _count_oriented(result, rec, oriented)
    if error:
        result.failed += 1
        if result.failed == 1:
            result.first_failure = clip(f'{rec.bag} {rec.topic} @ {rec.stamp_ns}: {error}', 300)
        if result.failed <= 10:
            result.warnings.append(f'{rec.bag} {rec.topic} @ {rec.stamp_ns}: {error}')
            log.warning('frame %s of %s not extracted: %s', rec.stamp_ns, rec.bag, error)
    else:
        result.written += 1
        result.bytes_written += nbytes
        old = rows.get(path)
        rows[path] = FrameRecord(rec.sequence, rec.index, path, old.label if old else None, rec.stamp_ns,
                                 old.label_source if old else 'none', rec.bag, rec.topic, encoding)
    if progress:
        progress(1)


def _count_oriented(result: ExtractResult, rec: FrameRecord, oriented: str) -> None:
    """Count a kept frame whose EXIF orientation was reset (``'reset'``) or that was encoded again for it."""
    if oriented == 'reset':
        result.exif_reset += 1
        if result.exif_reset == 1:
            log.info('extract: %s carries an EXIF orientation: set to 1 in the kept files (the node ignores it, '
                     'file readers would turn the frame); no pixel re-encoded', rec.topic[:200])
        return
    result.exif_reencoded += 1
    if result.exif_reencoded <= 10:
        text = (f'{rec.bag} {rec.topic} @ {rec.stamp_ns}: an EXIF orientation this cannot reset in place: the '
                'frame was encoded again as stored (as the node sees it), not kept byte for byte')
        result.warnings.append(text)
        log.warning('%s', text[:1000])


def _update_fps(out: Path, records: list[FrameRecord]) -> None:
    """``fps`` in dataset.yaml, estimated from the stamps when missing or unusable (a run that found no
    frame used to leave 0.0 there, and a later run kept it); a valid value (maybe set by hand) is kept."""
    meta = read_meta(out)
    fps = meta.get('fps')
    if isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0:
        return
    fps = _estimate_fps(records)
    if fps:
        write_meta(out, {**meta, 'fps': fps})


def _estimate_fps(records: list[FrameRecord]) -> float:
    stamps = sorted((r.sequence, r.stamp_ns, r.index) for r in records)
    dts = [(b[1] - a[1]) / (b[2] - a[2]) for a, b in zip(stamps, stamps[1:])
           if a[0] == b[0] and b[2] > a[2]]
    return round(1e9 / float(np.median(dts)), 3) if dts else 0.0
