"""Read rosbag2 (MCAP, sqlite3) and ROS 1 bags without ROS, surviving truncated and corrupt files.

``read_messages`` first reads a bag with ``rosbags``' AnyReader (time-ordered, all formats). When
that fails (a recorder killed mid-write leaves an MCAP without summary, a disk error flips bytes,
a ``.db3`` loses pages) it warns and falls back to a salvage reader that walks the file record by
record, skips what is damaged and yields every message it can still read. Messages come out raw
(CDR or ROS 1 bytes) so that worker processes can deserialise and decode them in parallel.

Other recorders' files too: rosbag2's file compression (``bag_0.mcap.zstd``, ``bag_0.db3.zstd``; a lone
such file is decompressed to a temporary file first), its message compression (each message a zstd frame,
also where the file is salvaged), MCAP files of the ``ros1`` profile (``mcap convert`` of a ROS 1 bag;
read with the ``mcap`` reader, in log-time order) and ROS 1 bags a killed ``rosbag record`` left unindexed
(``*.bag.active``, or a ``.bag`` without its index: :mod:`vidseg_ros.data.bags.salvage_ros1`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from mcap.records import Channel, Schema
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from vidseg_ros.config import MAX_YAML_BYTES, MAX_YAML_DEPTH, ConfigError, StrictLoader, parse_yaml
from vidseg_ros.data.bags.foreign import mcap_profile, read_plain_mcap, ros2_type, unpacked, unzstd
from vidseg_ros.data.bags.salvage import SalvageStats, salvage_records
from vidseg_ros.data.bags.salvage_ros1 import salvage_ros1
from vidseg_ros.data.order import natural_key
from vidseg_ros.files import NotAFileError, file_problem, open_regular
from vidseg_ros.text import bag_name, clip

log = logging.getLogger(__name__)
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
# A recorder's metadata.yaml is about 180 bytes a split and 1 kB a topic: 26,000 1 s splits (7 h) wrote 4.8 MB, past
# the 4 MB any YAML may be, and such a bag was read record by record as if damaged. It may be METADATA_LIMIT more
# than its folder's storage files account for (METADATA_PER_FILE each, with 24 bytes a character of its name: it is
# there twice, and a character YAML escapes is 10 bytes, '\U0001F600': emoji names wrote 20 a character),
# never past METADATA_CAP. The bounded parse of that 4.8 MB took 17 s CPU and 320 MB (3.5 s and 67 MB a MB): the
# cap, 180,000 such splits, is 2 minutes and 2 GB. A larger one is not parsed but salvaged around.
METADATA_LIMIT = 4 * 2**20
METADATA_PER_FILE = 512
METADATA_CAP = 32 * 2**20
_SPARE_FILES = 16   # files left to others (a worker's video, a log) while a bag's splits are open
_ROS2 = get_typestore(Stores.ROS2_HUMBLE)
_ROS1 = get_typestore(Stores.ROS1_NOETIC)
# rosbag2's file compression appends .zstd to each storage file; ``rosbag record`` writes .bag.active until it closes
STORAGE_SUFFIXES = ('.mcap', '.db3', '.mcap.zstd', '.db3.zstd')
ROS1_SUFFIXES = ('.bag', '.bag.active')


@dataclass
class RawMessage:
    """One serialized message as stored in a bag."""

    bag: str
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes
    fmt: str = 'cdr'            # cdr (ROS 2) or ros1


def deserialize(msg: RawMessage):
    """RawMessage -> rosbags message object (standard types from the built-in typestores)."""
    if msg.fmt == 'ros1':
        return _ROS1.deserialize_ros1(msg.data, msg.msgtype)
    return _ROS2.deserialize_cdr(msg.data, msg.msgtype)


def has_suffix(path: str | Path, suffixes: tuple[str, ...]) -> bool:
    """Whether the file name ends in one of ``suffixes`` (any case; ``.mcap.zstd`` is two suffixes)."""
    return Path(path).name.lower().endswith(suffixes)


def bag_files(path: str | Path) -> list[Path]:
    """The storage files of a bag folder (``*.mcap``, ``*.db3``, compressed ``*.mcap.zstd``, ``*.db3.zstd``) or
    the file itself. Hidden files are left out: a bag copied from a Mac has a ``._bag_0.mcap`` beside each file,
    which was read as a split missing from metadata.yaml and reported twice as damaged."""
    path = Path(path)
    if path.is_dir():
        # Natural order: recorder splits are named bag_2 ... bag_10.
        files = sorted((p for p in path.iterdir()
                        if has_suffix(p, STORAGE_SUFFIXES) and p.is_file() and not p.name.startswith('.')),
                       key=lambda p: natural_key(p.name))
        if not files and not recorded_nothing(path):
            raise FileNotFoundError(f'{path}: no .mcap or .db3 files (nor .mcap.zstd, .db3.zstd) in this bag folder')
        return files
    if problem := file_problem(path):    # a FIFO or a device was 'does not exist'
        raise FileNotFoundError(f'bag {path} {"does not exist" if problem == "is missing" else problem}')
    return [path]


def recorded_nothing(path: Path) -> bool:
    """Whether bag folder ``path``'s metadata.yaml says it lists no file and no message: what the recorder left
    when it was stopped before a first message, before it wrote an empty ``<bag>_0.mcap`` as rosbag2 does. Such a
    bag was 'no .mcap or .db3 files', and extract refused the demo's bag after a quick double Ctrl-C."""
    try:
        info = _bag_information(path)
        return info['relative_file_paths'] == [] and info['message_count'] == 0
    except _UNREADABLE:
        return False


def read_messages(path: str | Path, topics: list[str] | None = None, start_ns: int | None = None,
                  stop_ns: int | None = None, warnings: list[str] | None = None,
                  found: dict[str, str] | None = None) -> Iterator[RawMessage]:
    """Every readable message of one bag, in time order when the bag is intact.

    Args:
        path: bag folder (rosbag2), ``.mcap``, ``.db3`` or ROS 1 ``.bag`` file.
        topics: keep only these topics (None = all). A topic is named as ``text.bag_name`` keeps it (a name with
            control characters or over 200 characters is escaped and cut, in messages and here alike).
        start_ns, stop_ns: keep log times in [start_ns, stop_ns).
        warnings: damage reports are appended here (and logged) so callers can summarise them.
        found: filled with every topic of the bag, selected or not (topic -> msgtype; in a damaged bag,
            those with a readable message), so a caller can tell what else it holds without reading it again.
    """
    warnings = warnings if warnings is not None else []
    found = found if found is not None else {}
    path = Path(path)
    if path.is_file() and has_suffix(path, ('.zstd',)):     # a lone rosbag2 file-compressed split
        with tempfile.TemporaryDirectory(prefix='vidseg_unzstd_') as tmp:
            plain = unzstd(path, Path(tmp), lambda text: _warn(warnings, text))
            _SHOWN_AS[str(plain)] = clip(path)
            try:
                for msg in read_messages(plain, topics, start_ns, stop_ns, warnings, found):
                    msg.bag = str(path)
                    yield msg
            finally:
                _SHOWN_AS.pop(str(plain), None)
        return
    if _file_compressed(path):
        # one split decompressed at a time: rosbags' reader decompresses every split into a temporary folder
        # before the first message (a 552 kB bag of 2000 frames: 440 MB), and again for a count
        for file in bag_files(path):
            for msg in read_messages(file, topics, start_ns, stop_ns, warnings, found):
                msg.bag = str(path)
                yield msg
        return
    topics = [bag_name(t) for t in topics] if topics else topics
    seen: set[tuple[str, int]] = set()
    if path.is_file() and has_suffix(path, ('.bag.active',)):     # no index to read it by
        _warn(warnings, f'{clip(path)}: a ROS 1 bag still being recorded, or left by a `rosbag record` that was '
                        'killed (no index): read record by record')
        files = [path]
    else:
        files = yield from _regular(path, topics, start_ns, stop_ns, warnings, found, seen)
    for file in files:
        for msg in _salvage(file, warnings):
            found.setdefault(msg.topic, msg.msgtype)
            if topics and msg.topic not in topics:
                continue
            if (start_ns is not None and msg.log_time_ns < start_ns) or \
                    (stop_ns is not None and msg.log_time_ns >= stop_ns):
                continue
            if (msg.topic, msg.log_time_ns) in seen:
                continue
            seen.add((msg.topic, msg.log_time_ns))
            yield msg


def _regular(path: Path, topics, start_ns, stop_ns, warnings: list[str], found: dict[str, str],
             seen: set[tuple[str, int]]):
    """The messages the regular reader gives (``seen`` filled); returns the files to salvage after them:
    the splits its metadata.yaml does not list, or every file when the regular reader failed."""
    # listed before the regular reader reads metadata.yaml: a split the recorder closes meanwhile is then read by
    # both (its messages kept once: ``seen``); listed after, it was read by neither
    files = unlisted_files(path)
    if wal := _pending_wal(path):
        # rosbags opens a database immutable: the pages of a write-ahead log are not read (the last frames of a
        # recording killed with rosbag2's 'resilient' preset, in silence); sqlite3 reads them
        _warn(warnings, f'{clip(path)}: {clip(", ".join(w.name for w in wal))} holds messages not yet in the database '
                        '(a recording that was killed): read record by record')
        return bag_files(path)
    expected: dict[str, int] = {}
    got: dict[str, int] = {}
    try:
        for msg in _read_any(path, topics, start_ns, stop_ns, found, expected):
            seen.add((msg.topic, msg.log_time_ns))
            got[msg.topic] = got.get(msg.topic, 0) + 1
            yield msg
        short = {t: n for t, n in expected.items() if got.get(t, 0) < n and start_ns is None and stop_ns is None}
        if short:   # rosbags gives nothing of a connection whose QoS text in metadata.yaml differs from its storage's
            _warn(warnings, f'{clip(path)}: the regular reader gave fewer messages than the bag lists ('
                            f'{clip(", ".join(f"{t}: {got.get(t, 0)} of {n}" for t, n in short.items()))}); reading '
                            'its files record by record for the rest')
            return bag_files(path)
        if files:
            _warn(warnings, f'{clip(path)}: {clip(", ".join(f.name for f in files))} not listed in its metadata.yaml '
                            '(a split still being recorded, or left by a recorder that was killed): read record by '
                            'record after the listed files; a split still being recorded is read as far as it is '
                            'written')
        return files
    except Exception as e:  # noqa: BLE001 - any reader failure means damage; salvage what is left
        # the error may quote the bag's own text (a serialization format of 100 kB and ESC sequences)
        _warn(warnings, f'{clip(path)}: regular reader failed after {len(seen)} messages '
                        f'({type(e).__name__}: {clip(e)}); salvaging the rest record by record')
        return bag_files(path)


def _pending_wal(path: Path) -> list[Path]:
    """The non-empty SQLite write-ahead logs (``bag_0.db3-wal``) beside the databases of bag ``path``."""
    try:
        files = bag_files(path) if path.exists() else []
    except OSError:
        return []
    wal = [f.with_name(f.name + '-wal') for f in files if has_suffix(f, ('.db3',))]
    return [w for w in wal if w.is_file() and w.stat().st_size > 0]


def _file_compressed(path: Path) -> bool:
    """Whether bag folder ``path`` holds splits compressed whole (rosbag2's ``--compression-mode file``)."""
    try:
        return path.is_dir() and any(has_suffix(f, ('.zstd',)) for f in bag_files(path))
    except OSError:
        return False


def _metadata_topics(path: Path) -> dict[str, tuple[str, int]] | None:
    """topic -> (msgtype, message count) as metadata.yaml lists them; None when it does not."""
    try:
        info = _bag_information(path)
        return {bag_name(t['topic_metadata']['name']): (str(t['topic_metadata']['type']), int(t['message_count']))
                for t in info['topics_with_message_count']}
    except _UNREADABLE:
        return None


def unlisted_files(path: Path) -> list[Path]:
    """The storage files of bag folder ``path`` that its metadata.yaml does not list: the regular reader reads
    only the listed ones, and the recorder lists a split when it closes it, so a bag still being recorded (or
    one whose recorder was killed) lost its last split in silence. [] for a file, or a folder without a
    readable metadata.yaml (the regular reader fails there, and every file is salvaged)."""
    names = listed_names(path)
    return [] if names is None else [f for f in bag_files(path) if f.name not in names]


def listed_names(path: Path) -> set[str] | None:
    """The file names bag folder ``path``'s metadata.yaml lists; None for a file, or a folder without a metadata.yaml
    a reader can use (none, malformed, not a recorder's shape, too large)."""
    try:
        listed = _bag_information(path)['relative_file_paths']
        # strings only: str() of a YAML alias bomb (a 1 kB list of lists of 10**9 leaves) held it for hours
        # before BoundedLoader bounded what aliases expand to; a name that is no string names no file either
        return {Path(p).name for p in listed if isinstance(p, str)}
    except _UNREADABLE:
        return None


def _metadata_text(path: Path) -> str:
    """The bag folder's metadata.yaml; ValueError (the bag is then read record by record) when over what a recorder
    writes for the files there (``_metadata_allowance``); '' for a file or a folder without one."""
    meta = path / 'metadata.yaml'
    if not (path.is_dir() and meta.exists()):
        return ''
    try:
        # rosbags opens it too: a FIFO there blocked extract for good, a link to /dev/zero took 8 GB in 20 s
        f = open_regular(meta, 'r')
    except NotAFileError as e:
        raise ValueError(f'{clip(meta)} {e.strerror}: not parsed') from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > METADATA_LIMIT and size > (limit := _metadata_allowance(path)):
            raise ValueError(f'{clip(meta)} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB a recorder '
                             f'writes for the files there: not parsed')
        return f.read()


def _metadata_allowance(path: Path) -> int:
    """The largest metadata.yaml bag folder ``path`` may have: ``METADATA_LIMIT`` and ``METADATA_PER_FILE`` plus 24
    times the length of the name of each storage file there, at most ``METADATA_CAP``. (Names are listed, not
    ``bag_files``: that reads metadata.yaml where there is no file.)"""
    limit = METADATA_LIMIT
    with os.scandir(path) as entries:
        for e in entries:
            if limit >= METADATA_CAP:
                break
            if has_suffix(e.name, STORAGE_SUFFIXES) and not e.name.startswith('.') and e.is_file():
                limit += METADATA_PER_FILE + 24 * len(e.name)
    return min(limit, METADATA_CAP)


# what reading a bag folder's metadata.yaml raises where there is none to use: none there (a file: None), too large
# or malformed (ValueError), not a recorder's shape (TypeError, KeyError)
_UNREADABLE = (OSError, ValueError, yaml.YAMLError, TypeError, KeyError)


def _bag_information(path: Path):
    """The ``rosbag2_bagfile_information`` mapping of bag folder ``path``'s metadata.yaml (one of ``_UNREADABLE``
    where there is none)."""
    return _metadata(path)['rosbag2_bagfile_information']


def _metadata(path: Path):
    """The data of bag folder ``path``'s metadata.yaml, bounded (``parse_yaml``: an alias bomb, 10**5 nested
    brackets) - a ValueError as for an oversized one; None where there is none. The bounded parse reads ~0.1 MB/s
    and a read asked for it three times: a bag of 2000 splits (320 kB) spent 8 s on it; the last two are kept,
    each until its file changes."""
    try:
        st = os.stat(path / 'metadata.yaml') if path.is_dir() else None
    except OSError:
        st = None
    if st is None:
        return _parsed_metadata(path, None)
    return _parsed_metadata(path, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@functools.lru_cache(maxsize=2)
def _parsed_metadata(path: Path, version):
    text = _metadata_text(path)
    if not text:
        return None
    if len(text) <= MAX_YAML_BYTES:
        return parse_yaml(text, clip(path / 'metadata.yaml'))
    loader = _ListingLoader(text)       # past what parse_yaml takes: its files allow it (_metadata_allowance)
    loader.name = clip(path / 'metadata.yaml')
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _ListingLoader(StrictLoader):
    """The loader of a metadata.yaml larger than ``parse_yaml`` takes: no alias (neither rosbag2 nor this recorder
    writes one, and without them what it holds is bounded by its size, which its files bound), ``MAX_YAML_DEPTH``
    levels. ``BoundedLoader``'s 10**6 values would end at 70,000 splits (14 values each)."""

    _depth = 0

    def compose_node(self, parent, index):
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            raise ConfigError(f'{self.name}: line {line}: an alias, in a metadata.yaml over '
                              f'{MAX_YAML_BYTES >> 20} MB: not parsed')
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(f'{self.name}: line {line}: nested over {MAX_YAML_DEPTH} levels deep')
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@contextlib.contextmanager
def _any_reader(path: Path) -> Iterator[AnyReader]:
    """rosbags' reader of ``path``, once its metadata.yaml is checked to be of a recorder's size and shape
    (rosbags parses it too, unbounded: 10**5 nested brackets were a RecursionError, an internal error). A file
    named in capitals (``DRIVE.BAG``, from a FAT card) is opened through a link named in lower case: rosbags
    knows ``.bag``, ``.mcap`` and ``.db3`` only, and 'Unrecognized storage format' sent an intact bag to the
    salvage (out of time order, reported as damaged)."""
    _metadata(path)
    if not (path.is_file() and path.suffix != path.suffix.lower()):
        with AnyReader([path], default_typestore=_ROS2) as reader:
            yield reader
        return
    with tempfile.TemporaryDirectory(prefix='vidseg_suffix_') as tmp:
        link = Path(tmp) / (path.stem + path.suffix.lower())
        link.symlink_to(path.absolute())
        _SHOWN_AS[str(link)] = clip(path)
        try:
            with AnyReader([link], default_typestore=_ROS2) as reader:
                yield reader
        finally:
            _SHOWN_AS.pop(str(link), None)


def _open_files_left() -> int:
    """How many more files this process may open (the soft ``RLIMIT_NOFILE`` less those open now)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    try:
        in_use = len(os.listdir('/proc/self/fd'))
    except OSError:
        in_use = 64
    return soft - in_use


def _splits_one_by_one(path: Path) -> list[Path] | None:
    """The splits bag folder ``path``'s metadata.yaml lists, to be opened one after another, when opening them all at
    once would pass the open-file limit; None when they fit (or it is no such MCAP folder). rosbags opens every
    split of a bag before its first message: on the usual ``ulimit -n`` of 1024, a bag of 1 s splits longer than
    17 min failed with 'Too many open files', and its intact files were read record by record, reported as damaged.
    rosbags reads a bag's splits one after the other (each in time order), and so does this."""
    if not path.is_dir():
        return None
    try:
        listed = _bag_information(path)['relative_file_paths']
        names = [str(name) for name in listed]
    except _UNREADABLE:
        return None
    if len(names) + _SPARE_FILES <= _open_files_left() or not all(n.endswith('.mcap') and Path(n).name == n
                                                                   for n in names):
        return None
    return [path / n for n in names]


def list_topics(path: str | Path, salvage: bool = True) -> dict[str, tuple[str, int]] | None:
    """topic -> (msgtype, message count), from a full read when the bag index is damaged.

    ``salvage=False``: None instead of that full read (which also logs the damage), for callers that only
    want a cheap look, such as a progress bar's total.
    """
    out: dict[str, tuple[str, int]] = {}
    if _file_compressed(Path(path)) and (listed := _metadata_topics(Path(path))) is not None:
        return listed       # opening it with rosbags decompresses every split
    try:
        if _splits_one_by_one(Path(path)) is not None:
            # more splits than files may be open: the counts metadata.yaml lists, as rosbags gives them for a folder
            # (opening 26,000 1 s splits one after another took 2 min)
            if (listed := _metadata_topics(Path(path))) is None:
                raise ValueError('metadata.yaml lists its files but not its topics')
            return listed
        with _any_reader(Path(path)) as reader:
            # summed over a topic's connections: a ROS 1 bag has one per publisher, and the last one's count was
            # the topic's (2 of 7 messages: extract's progress total, its check for a moved bag)
            for c in reader.connections:
                t = bag_name(c.topic)
                out[t] = (c.msgtype, out.get(t, (c.msgtype, 0))[1] + (c.msgcount or 0))
        return out
    except Exception:  # noqa: BLE001
        out = {}
        if not salvage:
            return None
        for msg in read_messages(path):
            t, n = out.get(msg.topic, (msg.msgtype, 0))
            out[msg.topic] = (t, n + 1)
    return out


# temporary file decompressed from a split -> that split as warnings name it: they named the temporary file, gone
# by then, the same 'bag_0.mcap' for every bag (which one was damaged?)
_SHOWN_AS: dict[str, str] = {}


def _warn(warnings: list[str], text: str) -> None:
    for tmp, shown in list(_SHOWN_AS.items()):
        text = text.replace(tmp, shown)
    warnings.append(text)
    log.warning(text)


def _read_any(path: Path, topics, start_ns, stop_ns, found: dict[str, str],
              expected: dict[str, int] | None = None) -> Iterator[RawMessage]:
    """The regular reader's messages; ``expected`` is filled with the message count the bag lists for each
    selected topic (its metadata.yaml, index or statistics)."""
    expected = expected if expected is not None else {}
    if path.is_file() and has_suffix(path, ('.mcap',)) and mcap_profile(path) not in (None, 'ros2'):
        for topic, msgtype, t, data, fmt in read_plain_mcap(path, topics, start_ns, stop_ns, found):
            yield RawMessage(str(path), topic, msgtype, t, data, fmt)    # rosbags reads only the ros2 profile
        return
    splits = _splits_one_by_one(path)
    if splits is None:
        with _any_reader(path) as reader:
            yield from _from_reader(reader, path, topics, start_ns, stop_ns, found, expected)
        return
    for split in splits:    # more splits than files may be open. The mcap reader: AnyReader parsed every split's
        # message definitions again (45 ms a topic), rosbags' plain reader took 4.4 ms a split to open, 0.26 ms (26,000
        # 1 s splits: 2 min); unpacked there: message compression, which a lone file's reader misses
        for topic, msgtype, t, data, fmt in read_plain_mcap(split, topics, start_ns, stop_ns, found):
            yield RawMessage(str(path), topic, msgtype, t, data, fmt)


def _from_reader(reader, path: Path, topics, start_ns, stop_ns, found: dict[str, str],
                 expected: dict[str, int]) -> Iterator[RawMessage]:
    """A rosbags reader's messages (of the selected topics) as RawMessages."""
    found.update({bag_name(c.topic): c.msgtype for c in reader.connections})
    conns = [c for c in reader.connections if not topics or bag_name(c.topic) in topics]
    for c in conns:
        expected[bag_name(c.topic)] = expected.get(bag_name(c.topic), 0) + (c.msgcount or 0)
    if not conns:       # an empty selection means "all" to AnyReader
        log.debug('%s: none of the topics %s', path, topics)   # the caller says what it missed
        return
    for conn, t, raw in reader.messages(connections=conns, start=start_ns, stop=stop_ns):
        fmt = 'ros1' if path.suffix.lower() == '.bag' else 'cdr'
        yield RawMessage(str(path), bag_name(conn.topic), conn.msgtype, t, bytes(raw), fmt)


def _salvage(file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    # (a .zstd split never comes here: read_messages decompresses it first)
    if has_suffix(file, ('.mcap',)):
        yield from _salvage_mcap(file, warnings)
    elif has_suffix(file, ('.db3',)):
        yield from _salvage_sqlite(file, warnings)
    elif has_suffix(file, ROS1_SUFFIXES):
        for conn, log_time, data in salvage_ros1(file, lambda text: _warn(warnings, text)):
            yield RawMessage(str(file), bag_name(conn.topic), ros2_type(conn.msgtype, 'ros1'), log_time, data, 'ros1')
    else:
        _warn(warnings, f'{file}: no salvage reader for this format; damaged part skipped')


def _salvage_mcap(file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    """Messages of a damaged MCAP, via the shared record salvage (:mod:`vidseg_ros.data.bags.salvage`)."""
    stats = SalvageStats()
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, int, str]] = {}
    for record in salvage_records(file, stats):
        if isinstance(record, Schema):
            schemas[record.id] = record.name
        elif isinstance(record, Channel):
            channels[record.id] = (bag_name(record.topic), record.schema_id, record.message_encoding)
        else:
            topic, sid, enc = channels[record.channel_id]
            fmt = 'ros1' if enc == 'ros1' else 'cdr'
            yield RawMessage(str(file), topic, ros2_type(schemas.get(sid, ''), enc), record.log_time,
                             unpacked(record.data, fmt), fmt)
    for text in stats.warnings:
        _warn(warnings, text)
    if stats.damaged_chunks or stats.truncated:
        _warn(warnings, f'{file}: {stats.messages} message(s) read, {stats.salvaged} of them from damaged or cut '
                        f'chunks ({stats.damaged_chunks} damaged), {stats.skipped} skipped')


# --- sqlite3: read row by row so that a malformed page costs only its rows ---
# sqlite's message for a damaged schema quotes its bytes: not UTF-8, it raises UnicodeDecodeError instead
_DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


def _salvage_sqlite(file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    with tempfile.TemporaryDirectory(prefix='vidseg_salvage_') as tmp:
        yield from _read_sqlite_rows(_pad_sqlite(file, Path(tmp), warnings), file, warnings)


def _pad_sqlite(file: Path, tmp: Path, warnings: list[str]) -> Path:
    """A truncated database reads again once zero-padded to the size its header states."""
    with file.open('rb') as f:
        head = f.read(100)
    size = file.stat().st_size
    if len(head) < 100 or not head.startswith(b'SQLite format 3'):
        return file
    page = struct.unpack('>H', head[16:18])[0]
    page = 65536 if page == 1 else page
    want = page * struct.unpack('>I', head[28:32])[0]
    if size >= want:
        return file
    _warn(warnings, f'{file}: truncated ({size} of {want} bytes); reading the surviving pages')
    padded = tmp / file.name
    shutil.copyfile(file, padded)
    with padded.open('r+b') as f:
        f.truncate(want)
    return padded


def _read_sqlite_rows(path: Path, file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    try:
        con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
        # a damaged byte in a topic name costs that character (its decode error read as an unreadable table)
        con.text_factory = lambda b: b.decode('utf-8', 'replace')
        topics = {i: (bag_name(n), t) for i, n, t in con.execute('SELECT id, name, type FROM topics')}
    except _DB_ERRORS as e:
        why = e.object.decode('utf-8', 'replace') if isinstance(e, UnicodeDecodeError) else e   # sqlite's own words
        _warn(warnings, f'{clip(file)}: cannot read the topic table ({clip(why)}); nothing salvaged')
        return
    try:
        max_id = con.execute('SELECT max(id) FROM messages').fetchone()[0] or 0
    except _DB_ERRORS:
        max_id = 10**7
    # rosbag2 numbers its rows 1, 2, 3...: an id between two rows read that gives no row is lost too (a damaged
    # b-tree page loses its rows in silence: 'rowid out of order'), as is a row whose topic is not in the table
    lost, run, errors_run, last_ok = 0, 0, 0, 0     # run: ids not read since the last row read
    for rid in range(1, max_id + 1):
        try:
            row = con.execute('SELECT topic_id, timestamp, data FROM messages WHERE id = ?',
                              (rid,)).fetchone()
        except _DB_ERRORS:
            row = False
        if not row:
            run, errors_run = run + 1, errors_run + (row is False)
            if run > 10000:
                break
            continue
        lost, run, errors_run, last_ok = lost + run, 0, 0, rid
        tid, t, data = row
        if tid not in topics or not isinstance(t, int) or not isinstance(data, bytes):
            lost += 1
            continue
        # unpacked: rosbag2's per-message compression
        yield RawMessage(str(file), topics[tid][0], topics[tid][1], t, unpacked(data, 'cdr'))
    if lost:
        _warn(warnings, f'{file}: {lost} message row(s) lost or unreadable')
    if errors_run:
        _warn(warnings, f'{file}: message rows after id {last_ok} are unreadable (lost pages)')
    con.close()


