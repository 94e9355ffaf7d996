"""Sequence names, ``<bag name>_<topic part>_<NNN>``: one per bag and topic even where their names collide, the same
in every run and from any folder (a re-run resumes), and short enough for a folder name."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from vidseg_ros.data.bags.reader import ROS1_SUFFIXES, STORAGE_SUFFIXES
from vidseg_ros.data.datasets.layouts import FrameRecord

log = logging.getLogger(__package__ + '.extract')     # messages of `vidseg extract`, under its name
BAG_SUFFIXES = STORAGE_SUFFIXES + ROS1_SUFFIXES


def slug(topic: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '_', topic).strip('_') or 'image'


def topic_hash(topic: str) -> str:
    return hashlib.sha1(topic.encode()).hexdigest()[:8]


# A sequence name is a folder name (images/<sequence>/, labels/<sequence>/): at most 255 bytes, and names made
# from it need room too (make-variant's <sequence>_<index>_noise), so a longer one is shortened.
MAX_SEQUENCE_BYTES = 200


def sequence_name(name: str, part: str, seg: int) -> str:
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
    return slug(topic), f'{slug(topic)}-{topic_hash(topic)}'


def _is_sequence_of(seq: str, name: str, part: str) -> bool:
    """Whether ``seq`` is a sequence of bag ``name`` and topic ``part`` (shortened or not)."""
    m = re.fullmatch(r'.+_(\d+)', seq)
    return bool(m) and sequence_name(name, part, int(m[1])) == seq


def topic_part(name: str, rec: FrameRecord) -> str | None:
    """The part of ``rec``'s sequence name that stands for its topic, if it is one of bag ``name``'s
    (``<name>_<topic slug>[-<8 hex digits>]_<NNN>``, or that name shortened)."""
    m = re.fullmatch(rf'{re.escape(name)}_({re.escape(slug(rec.topic))}(?:-[0-9a-f]{{8}})?)_\d+', rec.sequence)
    if m:
        return m[1]
    return next((p for p in _topic_parts(rec.topic) if _is_sequence_of(rec.sequence, name, p)), None)


def bag_key(bag: str | Path) -> str:
    return os.path.realpath(bag)


def bag_keys(rows) -> dict[str, str]:
    """Each bag ``rows`` name -> its ``bag_key``, resolved once per bag, not per row (800 bags of 3 frames took 60 s in
    realpath alone, growing with bags x rows)."""
    return {bag: bag_key(bag) for bag in {r.bag for r in rows if r.bag}}


def rows_by_bag(rows) -> dict[str, list[FrameRecord]]:
    """``rows`` by the real path of their bag (``bag_key``); rows without a bag are left out."""
    keys, out = bag_keys(rows), {}
    for r in rows:
        if r.bag:
            out.setdefault(keys[r.bag], []).append(r)
    return out


def sequence_names(bags: list[Path], old_rows) -> list[str]:
    """The name each bag's sequences start with (``<name>_<topic>_<NNN>``).

    A bag is named after its folder or file, unless another bag of that name (earlier in this run,
    or already in the dataset's ``old_rows``) holds that name: then ``<name>-<8 hex digits of its
    path>``, so the ``drive`` bags of two days never share a sequence or a file name (same stamps
    would make the second skip as "existing" and be lost). A bag already in the dataset keeps the
    name it got there, so re-runs resume whatever the order of the bags; one at another path (moved, renamed,
    or named relative to another folder in an older index) is known by its frames (``moved_bags``), not by its
    name: another day's ``drive``, where the index named a ``drive`` by a relative path, was taken for it (its
    frames skipped at the same stamps, or put in the same sequences: an index no command could read).
    """
    owner: dict[str, str] = {}      # name -> the bag (path key) holding it
    known: dict[str, str] = {}      # bag key -> its name in the dataset
    keys = bag_keys(old_rows)
    for r in old_rows:
        m = re.fullmatch(rf'(.+)_{re.escape(slug(r.topic))}(?:-[0-9a-f]{{8}})?_\d+', r.sequence)
        name = m[1] if m else _shortened_bag_name(r) if r.bag else None
        if name and r.bag:
            key = keys[r.bag]
            owner.setdefault(name, key)
            known.setdefault(key, name)
    names = []
    for bag in bags:
        key, plain = bag_key(bag), _bag_stem(bag) if bag.is_file() else bag.name
        name = known.get(key)
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
    """The bag name of a row whose sequence name was shortened (``sequence_name``): of the names its bag can
    have (its own, or with the hash of its path), the one that gives that sequence name."""
    bag = Path(rec.bag)
    plains = {bag.stem, bag.name, _bag_stem(bag)}
    names = [*plains, *(f'{p}-{hashlib.sha1(bag_key(bag).encode()).hexdigest()[:8]}' for p in plains)]
    return next((n for n in names for p in _topic_parts(rec.topic) if _is_sequence_of(rec.sequence, n, p)), None)
