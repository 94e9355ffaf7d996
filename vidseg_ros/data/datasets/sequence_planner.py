"""Each frame's sequence, index and file, planned in the main process as a bag is read (``SequencePlanner``): frames
in stamp order per topic (``stamp_order``), a new sequence where the stamps jump or the frame size changes, the
``start_s``/``stop_s`` range, ``every``-N subsampling, and the files a dataset already has for them."""
from __future__ import annotations

import logging
from pathlib import Path

from vidseg_ros.data.bags.reader import IMAGE_TYPES, RawMessage
from vidseg_ros.data.datasets.extract_config import ExtractConfig, ExtractResult
from vidseg_ros.data.datasets.frame_files import file_suffix, kept_as_recorded
from vidseg_ros.data.datasets.image_messages import deserialized, frame_hw, header_stamp_ns
from vidseg_ros.data.datasets.layouts import FrameRecord
from vidseg_ros.data.datasets.sequence_names import MAX_SEQUENCE_BYTES, sequence_name, slug, topic_hash, topic_part
from vidseg_ros.data.datasets.stamp_order import REORDER_FRAMES, StampOrder

log = logging.getLogger(__package__ + '.extract')     # messages of `vidseg extract`, under its name


class SequencePlanner:
    """Assigns sequences, indices and output paths as a bag is read, in stamp order per topic (main process only).

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
            part = topic_part(name, r)
            # a part two topics share (a dataset made before topics were kept apart): the first keeps it
            if part and r.topic not in self.parts and self.owner.setdefault(part, r.topic) == r.topic:
                self.parts[r.topic] = part

    def _part(self, topic: str) -> str:
        part = self.parts.get(topic)
        if part is not None:
            return part
        plain = slug(topic)
        rivals = sorted(t for t, ty in self.found.items()
                        if ty in IMAGE_TYPES and slug(t) == plain and t not in self.parts)
        first = min(rivals + [topic])
        part = plain if plain not in self.owner and first == topic else f'{plain}-{topic_hash(topic)}'
        if part != plain:
            log.info('extract: topics %s share the name %s: the sequences of %s are named %s_%s_...',
                     ', '.join(sorted({topic, *rivals, *(t for t, p in self.parts.items() if p == plain)}))[:300],
                     plain[:200], topic[:200], self.name[:200], part[:200])
        self.parts[topic], self.owner[part] = part, topic
        return part

    def plan(self, msg: RawMessage) -> list[tuple]:
        """Take the bag's next image message; -> the frames to write now, in stamp order per topic, each
        (record, path, message, the message deserialised where it is kept as recorded, else None):
        ``StampOrder`` holds a few of each topic's frames to put one that arrived late in its place."""
        m = deserialized(msg)   # once, here: for its size and for ``--image-format keep`` (``_place``)
        if m is None:
            return [self._damaged(msg)]
        stamp = header_stamp_ns(msg) if self.cfg.stamp == 'header' else 0
        stamp = stamp or msg.log_time_ns
        order = self.order.get(msg.topic)
        if order is None:
            order = self.order[msg.topic] = StampOrder(REORDER_FRAMES, self.cfg.max_gap_s)
        return self._placed(order.push(stamp, (msg, m)))

    def _damaged(self, msg: RawMessage) -> tuple:
        """A message whose bytes do not deserialise, planned to fail (its job says why, as a failed frame) outside
        its topic's order and sequences: its header stamp is noise (and, where it was too short to hold one, its
        log time is another clock than sim-time stamps), so placed among the frames it split their sequence in
        two; and ``--image-format keep`` raised its error out of the whole extract, the frames after it lost."""
        self.result.selected += 1
        path = self.out / 'images' / f'.damaged-{msg.log_time_ns}'     # never written: its decode fails first
        return FrameRecord('', 0, path, None, msg.log_time_ns, 'none', str(self.bag), msg.topic, ''), path, msg, None

    def flush(self) -> list[tuple]:
        """The frames still held, at the end of the bag."""
        return [p for order in self.order.values() for p in self._placed(order.drain())]

    def _placed(self, released) -> list[tuple]:
        return [p for stamp, item in released if (p := self._place(stamp, item)) is not None]

    def _place(self, stamp: int, item: tuple) -> tuple | None:
        """A frame's sequence, index and file, in stamp order of its topic (as ``plan`` gives it); None for one
        not kept. ``item``: the message and its deserialised fields."""
        msg, m = item
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
        hw = frame_hw(msg, m)   # a new size starts a new sequence: flow, propagation, temporal metrics need one
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
        seq = sequence_name(self.name, part, st['seg'])
        if seq != f'{self.name}_{part}_{st["seg"]:03d}' and msg.topic not in self.shortened:
            self.shortened.add(msg.topic)
            log.info('extract: the sequence names of %s in %s would be over %d bytes: shortened to %s',
                     msg.topic[:200], str(self.bag)[:200], MAX_SEQUENCE_BYTES, seq)
        recorded = kept_as_recorded(msg, cfg.image_format, m)
        path = self.out / 'images' / seq / f'{stamp}{file_suffix(recorded, cfg.image_format)}'
        path = self._indexed_as(msg.topic, stamp, path)
        rec = FrameRecord(seq, pos, path, None, stamp, 'none', str(self.bag), msg.topic, '')
        return rec, path, msg, recorded

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
