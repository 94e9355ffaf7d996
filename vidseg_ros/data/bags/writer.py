"""rosbag2-compatible MCAP bag writer, without ROS.

Takes already serialized CDR messages ``(topic, data, log_time_ns)`` and writes a rosbag2 bag
directory: ``<bag>/<bag>_<i>.mcap`` files plus ``metadata.yaml`` (rosbag2 version 9), readable by
``ros2 bag info/play``, the ``rosbags`` library and the ``mcap`` reader.

Each MCAP file uses profile ``ros2``, one ``ros2msg`` schema per type with the full definition
(:mod:`vidseg_ros.data.bags.msgdefs`), ``cdr`` channels with ``offered_qos_profiles`` and
``topic_type_hash`` metadata, chunk + message indexes and a statistics summary (the ``mcap``
package's ``Writer`` does the container format). Files split by size and duration and each one opens
on its own: every file registers every known topic.

Crash safety: after each completed chunk everything is put into the file (see
:mod:`vidseg_ros.data.bags.direct_file`, O_DIRECT where possible), so a SIGKILL loses only the chunk
being filled; ``fsync_bytes`` bounds what a power loss can take.
:func:`vidseg_ros.data.bags.recover.recover_bag` turns such a truncated file back into a valid bag.

Disk full: :meth:`BagWriter.closing_bytes` bounds what finishing the current file still needs to
write (chunk in progress, summary, ``metadata.yaml``); the recorder keeps that much reserved (see
:mod:`vidseg_ros.data.recorder.disk_space`). :meth:`BagWriter.abandon` is the last resort when even that fails.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import yaml
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from vidseg_ros.config import ConfigError, parse_yaml   # not imported at a split: an import opens a file, and a
from vidseg_ros.data.bags.direct_file import AppendFile  # recorder with every descriptor taken stopped at its first split
from vidseg_ros.data.bags.msgdefs import message_definition
from vidseg_ros.data.order import natural_key
from vidseg_ros.text import clip

log = logging.getLogger(__name__)

COMPRESSIONS = {'none': CompressionType.NONE, 'zstd': CompressionType.ZSTD, 'lz4': CompressionType.LZ4}
ROS_DISTRO = os.environ.get('ROS_DISTRO', 'kilted')
_INFINITE = {'sec': 9223372036, 'nsec': 854775807}  # RMW_DURATION_INFINITE as rosbag2 writes it
_MESSAGE_OVERHEAD = 9 + 22 + 16  # record header + fixed fields + its message index entry
_INFO = 'rosbag2_bagfile_information'


class BagExistsError(FileExistsError):
    """The bag directory (or one of its files) already exists; bags are never overwritten."""


def bag_qos_profile(reliability: str = 'reliable', durability: str = 'volatile', history: str = 'keep_last',
                    depth: int = 0) -> dict:
    """One offered QoS profile as rosbag2 (metadata version 9) writes it."""
    return {'history': history, 'depth': depth, 'reliability': reliability, 'durability': durability,
            'deadline': dict(_INFINITE), 'lifespan': dict(_INFINITE), 'liveliness': 'automatic',
            'liveliness_lease_duration': dict(_INFINITE), 'avoid_ros_namespace_conventions': False}


def qos_yaml(profiles: list[dict]) -> str:
    """The ``offered_qos_profiles`` channel metadata string (a YAML list, rosbag2 v9 format)."""
    return yaml.safe_dump(list(profiles), default_flow_style=False, sort_keys=False) if profiles else ''


class BagWriter:
    """Writes one rosbag2 MCAP bag directory, splitting it into files by size and duration.

    Not thread-safe: one thread (the recorder's writer thread) owns it.

    Args:
        bag_dir: bag directory to create; it must not exist yet.
        compression: chunk compression, ``'none'``, ``'zstd'`` or ``'lz4'``.
        chunk_size_bytes: target chunk size; a SIGKILL loses at most the chunk being filled.
        max_bag_size_bytes: start a new file past this size (0: no limit).
        max_bag_duration_s: start a new file when messages span this long (0: no limit).
        fsync_bytes: force data to disk after this many bytes (0: only at file close).
        direct_io: write with O_DIRECT where the filesystem supports it (much less system CPU).
        space: a :class:`vidseg_ros.data.recorder.disk_space.DiskSpace` told about every byte the files add.
    """

    def __init__(self, bag_dir: str | Path, compression: str = 'none', chunk_size_bytes: int = 1 << 20,
                 max_bag_size_bytes: int = 0, max_bag_duration_s: float = 0.0, fsync_bytes: int = 0,
                 direct_io: bool = True, space=None):
        if compression not in COMPRESSIONS:
            raise ValueError(f'compression {compression!r} is not one of {", ".join(COMPRESSIONS)}')
        self.bag_dir = Path(bag_dir)
        try:
            self.bag_dir.mkdir(parents=False)
        except FileExistsError as e:
            raise BagExistsError(f'bag {self.bag_dir} already exists; choose another name') from e
        self.compression = compression
        self.chunk_size_bytes = chunk_size_bytes
        self.max_bag_size_bytes = max_bag_size_bytes
        self.max_bag_duration_ns = int(max_bag_duration_s * 1e9)
        self.fsync_bytes = fsync_bytes
        self.direct_io = direct_io
        self.space = space
        self.files: list[Path] = []  # every file started, in order
        # metadata.yaml of the closed files, kept here as split() builds it: rereading every file's summary
        # and dumping every file's entry again at each split made a split cost ~3 ms per earlier file (10 s
        # per split after an hour of 1 s files). Each file's YAML lines are rendered once.
        self._closed_entries: list[dict] = []
        self._closed_yaml: list[tuple[str, str]] = []  # per closed file: its relative_file_paths and files lines
        self._closed_topics: dict[str, dict] = {}  # topic -> its entry, counts of the closed files, in file order
        # metadata.yaml is rewritten whole, so at every split it cost the same again for every earlier file: 1.3 GB
        # written for 4000 1 s splits, 100 GB over 10 h. It is rewritten at a split only while that stays a small
        # part of what the files add (see _metadata_due); at close, always (rosbag2 writes it at close only).
        self._listed = 0               # closed files metadata.yaml lists
        self._bytes_unlisted = 0       # bytes of the closed files it does not list yet
        self._metadata_chars = 0       # size of the last metadata.yaml written
        self._metadata_failed = False  # its last rewrite at a split failed (said once)
        self._topics: dict[str, dict] = {}  # topic -> msgtype, definition, metadata
        self._writer: Writer | None = None
        self._file: AppendFile | None = None
        self._channels: dict[str, int] = {}
        self._file_bytes = 0
        self._file_start_ns: int | None = None
        self._chunks = 0
        self.pending_bytes = 0  # bytes of the chunk in progress, not in the file yet
        self.pending_counts: dict[str, int] = {}  # its messages per topic
        self.max_message_bytes = 0

    @property
    def current_path(self) -> Path | None:
        """The MCAP file being written, or None between files."""
        return self.files[-1] if self._writer is not None else None

    def add_topic(self, topic: str, msgtype: str, offered_qos_profiles: str | list[dict] = '',
                  type_hash: str = '') -> None:
        """Declare a topic (idempotent). Its schema and channel go into the current and all later files.

        Args:
            topic: full topic name, e.g. ``'/camera/image'``.
            msgtype: ``'pkg/msg/Type'``.
            offered_qos_profiles: the publishers' QoS (YAML string or list of :func:`bag_qos_profile`).
            type_hash: RIHS01 hash; looked up from the installed type description when empty.
        """
        if topic in self._topics:
            return
        definition, known_hash = message_definition(msgtype)
        if not isinstance(offered_qos_profiles, str):
            offered_qos_profiles = qos_yaml(offered_qos_profiles)
        metadata = {'offered_qos_profiles': offered_qos_profiles, 'topic_type_hash': type_hash or known_hash}
        # its metadata.yaml entry, parsed once: parsing the QoS YAML again at every split was half a split's time
        self._topics[topic] = {'msgtype': msgtype, 'definition': definition, 'metadata': metadata,
                               'entry': _topic_entry(topic, msgtype, 'cdr', metadata, 0)['topic_metadata']}
        if self._writer is not None:
            self._register(topic)

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int = 0) -> bool:
        """Append one serialized message; opens/splits files as needed. True when it completed a chunk.

        Args:
            topic: a topic declared with :meth:`add_topic`.
            data: CDR bytes as received (not copied again).
            log_time_ns: receive time, nanoseconds since the epoch.
            publish_time_ns: send time when known, else ``log_time_ns``.
        """
        if self._writer is not None and self._should_split(log_time_ns):
            self.split()
        if self._writer is None:
            self._open()
        if self._file_start_ns is None:
            self._file_start_ns = self._file_min_ns = self._file_max_ns = log_time_ns
        self._file_min_ns = min(self._file_min_ns, log_time_ns)
        self._file_max_ns = max(self._file_max_ns, log_time_ns)
        self._file_counts[topic] = self._file_counts.get(topic, 0) + 1
        before = self._file.tell()
        self._writer.add_message(self._channels[topic], log_time=log_time_ns, data=data,
                                 publish_time=publish_time_ns or log_time_ns)
        self._file_bytes += len(data) + 64  # + record and index overhead, roughly
        self.max_message_bytes = max(self.max_message_bytes, len(data))
        if self._file.tell() != before:  # a chunk was completed: make it crash-safe now
            self._synced()
            return True
        self.pending_bytes += len(data) + _MESSAGE_OVERHEAD
        self.pending_counts[topic] = self.pending_counts.get(topic, 0) + 1
        return False

    def _synced(self) -> None:
        """Everything written so far is in the file: nothing pending."""
        self._file.sync_point()
        self._chunks += 1
        self.pending_bytes = 0
        self.pending_counts = {}

    def closing_bytes(self) -> int:
        """Upper bound of the bytes that finishing the current file (and metadata.yaml) still writes.

        The chunk in progress (at most a chunk plus one message, with its message indexes: 16 bytes
        per record of at least 31, so under half a chunk), one chunk index per chunk, the schemas,
        channels, statistics and rosbag2 record of the summary, and metadata.yaml written next to
        the old one (temporary file + rename). A second message's worth covers block padding.
        """
        topics = sum(len(i['definition']) + len(i['metadata']['offered_qos_profiles']) + 2048
                     for i in self._topics.values())
        per_chunk = 128 + 16 * len(self._topics)
        files = 512 * (len(self.files) + 1)
        return (self.chunk_size_bytes * 3 // 2 + 2 * (self.max_message_bytes + _MESSAGE_OVERHEAD)
                + (self._chunks + 1) * per_chunk + 3 * topics + 2 * files + 64 * 1024)

    def _should_split(self, log_time_ns: int) -> bool:
        if self.max_bag_size_bytes and self._file_bytes >= self.max_bag_size_bytes:
            return True
        # the span the file would cover, not the time since its first message: after a clock jumped back
        # (a looping bag's /clock) that difference stayed negative and one file grew to 39 s of a 2 s limit
        return bool(self.max_bag_duration_ns and self._file_start_ns is not None
                    and max(self._file_max_ns, log_time_ns) - min(self._file_min_ns, log_time_ns)
                    >= self.max_bag_duration_ns)

    def _open(self) -> None:
        path = self.bag_dir / f'{self.bag_dir.name}_{len(self.files)}.mcap'
        try:
            self._file = AppendFile(path, self.fsync_bytes, direct=self.direct_io, space=self.space)
        except FileExistsError as e:
            raise BagExistsError(f'{path} already exists; refusing to overwrite it') from e
        self.files.append(path)
        self._writer = Writer(self._file, chunk_size=self.chunk_size_bytes,
                              compression=COMPRESSIONS[self.compression])
        self._writer.start(profile='ros2', library='vidseg_ros recorder (rosbag2-compatible)')
        self._channels = {}
        self._schemas: dict[str, int] = {}
        self._file_bytes = 0
        self._file_start_ns = None
        self._file_counts: dict[str, int] = {}
        self._chunks = self.pending_bytes = 0
        self.pending_counts = {}
        for topic in self._topics:
            self._register(topic)
        log.info('recording to %s', path)

    def _register(self, topic: str) -> None:
        info = self._topics[topic]
        msgtype = info['msgtype']
        if msgtype not in self._schemas:
            encoding = 'ros2msg' if info['definition'] else ''
            self._schemas[msgtype] = self._writer.register_schema(
                msgtype, encoding, info['definition'].encode())
        self._channels[topic] = self._writer.register_channel(
            topic, 'cdr', self._schemas[msgtype], metadata=info['metadata'])

    def flush(self) -> None:
        """End the chunk being filled now (a later SIGKILL cannot take what it holds)."""
        if self._writer is not None:
            self._writer.flush()
            self._synced()

    def split(self) -> Path | None:
        """Close the current file (if any); the next message opens a new one. Returns the closed file."""
        if self._writer is None:
            return None
        path = self.files[-1]
        # rosbag2's own MCAP plugin stores this record too: `ros2 bag info file.mcap` reads it.
        count = sum(self._file_counts.values())
        topics = [{'topic_metadata': info['entry'], 'message_count': self._file_counts.get(t, 0)}
                  for t, info in self._topics.items()]
        entry = _file_entry(path.name, count, self._file_min_ns if count else 0, self._file_max_ns if count else 0)
        info = yaml.safe_dump(_bag_info(topics, [entry], self.compression), default_flow_style=False, sort_keys=False)
        self._writer.add_metadata('rosbag2', {'serialized_metadata': info, 'ROS_DISTRO': ROS_DISTRO})
        self._writer.finish()
        self._file.close()
        self._writer = self._file = None
        self.pending_counts, self.pending_bytes = {}, 0  # all in the closed file
        self._remember(entry, topics)
        self._bytes_unlisted += self._file_bytes
        if self._metadata_due():
            try:
                self.write_metadata()
            except OSError as e:
                # at a split it only brings the list up to date (unlisted files are read too, close writes it
                # again): a full disk or a file-size limit here lost the message that split and stopped the recording
                if not self._metadata_failed:
                    log.warning('%s: metadata.yaml not brought up to date at a split (%s); tried again at the next '
                                'ones and at close', clip(self.bag_dir), clip(e.strerror or e))
                self._metadata_failed = True
        log.info('closed %s', path)
        return path

    def _metadata_due(self) -> bool:
        """Whether a split rewrites metadata.yaml: while the files it does not list yet are at least a sixteenth of
        those it lists (the rewrites then add up to ~17 times its final size: linear, not quadratic in the files), or
        they hold 100 times its size in data (a busy recording's list stays current). Files it does not list (a
        killed recorder's) are still read, record by record after the listed ones, and bag-recover lists them."""
        unlisted = len(self._closed_entries) - self._listed
        return 16 * unlisted >= self._listed or self._bytes_unlisted >= 100 * self._metadata_chars

    def _remember(self, entry: dict, topics: list[dict]) -> None:
        """Add a closed file's entry and its topic entries (every topic its file registered)."""
        self._closed_entries.append(entry)
        self._closed_yaml.append((_nested_yaml('relative_file_paths', entry['path']),
                                  _nested_yaml('files', entry)))
        for topic in topics:
            name = topic['topic_metadata']['name']
            if name in self._closed_topics:
                self._closed_topics[name]['message_count'] += topic['message_count']
            else:
                self._closed_topics[name] = dict(topic)

    def write_metadata(self) -> Path:
        """Write ``metadata.yaml`` of the closed files from memory: no file is read, no earlier entry dumped."""
        info = _bag_info(list(self._closed_topics.values()), self._closed_entries, self.compression)
        if not self._closed_entries:
            return _write_text(self.bag_dir, _dump({_INFO: info}))
        keys = list(info)
        first = keys.index('relative_file_paths')  # 'files' follows it
        head = _dump({_INFO: {k: info[k] for k in keys[:first]}})
        tail = _dump({_INFO: {k: info[k] for k in keys[first + 2:]}}).split('\n', 1)[1]
        text = ''.join([head, '  relative_file_paths:\n', *(p for p, _ in self._closed_yaml),
                        '  files:\n', *(f for _, f in self._closed_yaml), tail])
        path = _write_text(self.bag_dir, text)
        # counted as listed once written: counted before, a failed write left close() thinking it was, and the bag
        # ended with a metadata.yaml without its last files
        self._listed, self._bytes_unlisted, self._metadata_chars = len(self._closed_entries), 0, len(text)
        self._metadata_failed = False
        return path

    def adopt_sealed(self, path: Path) -> Path:
        """After :meth:`abandon` and ``seal``: add that file, read from its own summary (the writer's counts
        include the chunk that never reached it), and write ``metadata.yaml``."""
        sealed = bag_metadata(self.bag_dir, [path], self.compression)[_INFO]
        self._remember(sealed['files'][0], sealed['topics_with_message_count'])
        return self.write_metadata()

    def close(self) -> None:
        """Finish the current file and write ``metadata.yaml``. A bag stopped before its first message gets an empty
        ``<bag>_0.mcap`` holding the declared topics' schemas and channels, listed in metadata.yaml, as rosbag2 leaves
        it (it opens that file at start): before, the folder held metadata.yaml alone, listing no file, which
        rosbag2's readers and ``bag-recover`` took for no bag."""
        if self._writer is None and not self.files:
            self._open()
        self.split()
        if self._listed < len(self._closed_entries):
            self.write_metadata()

    def abandon(self) -> Path | None:
        """Last resort when closing failed: cut the current file back to its last complete chunk.

        The file is then as a SIGKILL would leave it (no summary): ``vidseg bag-recover`` reads it.
        Returns that file, or None when no file was open.
        """
        if self._file is None:
            return None
        self._file.abandon()
        self._writer = self._file = None
        return self.files[-1]


def new_bag_dir(output_dir: str | Path, prefix: str = 'vidseg') -> Path:
    """A fresh bag path ``<output_dir>/<prefix>_YYYY_MM_DD-HH_MM_SS[_N]`` that does not exist yet."""
    output_dir = Path(output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    base = output_dir / f'{prefix}_{time.strftime("%Y_%m_%d-%H_%M_%S")}'
    path, n = base, 0
    while path.exists():
        n += 1
        path = base.with_name(f'{base.name}_{n}')
    return path


def mcap_files(bag_dir: str | Path) -> list[Path]:
    """The ``.mcap`` files of a bag directory in recording order. Hidden files are left out: a bag copied from a
    Mac has a ``._bag_0.mcap`` (AppleDouble) beside each file, and bag-recover refused the bag for it ('not an
    MCAP file (no MCAP magic)')."""
    return sorted((p for p in Path(bag_dir).glob('*.mcap') if not p.name.startswith('.')),
                  key=lambda p: natural_key(p.name))


def _qos_profiles(name: str, text: str):
    """A channel's ``offered_qos_profiles`` (YAML text in its MCAP metadata) as metadata.yaml lists them; [] with
    a warning when it is not YAML. The text comes from whoever wrote the bag: one holding an ESC made the whole
    recovery fail ('unacceptable character #x001b') after the messages were copied, without metadata.yaml.
    Bounded (``parse_yaml``): 10**5 nested brackets were a RecursionError, an alias bomb was dumped into
    metadata.yaml expanded (9**9 items: the recovery never ended)."""
    try:
        return parse_yaml(text or '[]', 'offered_qos_profiles') or []
    except ConfigError as e:
        log.warning('%s: offered_qos_profiles in the bag is not YAML (%s): listed as none', clip(name),
                    clip(str(e).splitlines()[0] if str(e) else type(e).__name__))
        return []


def _topic_entry(name: str, msgtype: str, encoding: str, metadata: dict, count: int) -> dict:
    return {'topic_metadata': {
        'name': name, 'type': msgtype, 'serialization_format': encoding,
        'offered_qos_profiles': _qos_profiles(name, metadata.get('offered_qos_profiles')),
        'type_description_hash': metadata.get('topic_type_hash', '')},
        'message_count': count}


def _file_entry(name: str, count: int, start_ns: int, end_ns: int) -> dict:
    start = start_ns if count else 0
    return {'path': name, 'starting_time': {'nanoseconds_since_epoch': start},
            'duration': {'nanoseconds': max(0, end_ns - start) if count else 0}, 'message_count': count}


def _bag_info(topics: list[dict], entries: list[dict], compression: str) -> dict:
    """The ``rosbag2_bagfile_information`` mapping (metadata version 9)."""
    counted = [e for e in entries if e['message_count']]
    start = min((e['starting_time']['nanoseconds_since_epoch'] for e in counted), default=0)
    end = max((e['starting_time']['nanoseconds_since_epoch'] + e['duration']['nanoseconds']
               for e in counted), default=0)
    return {
        'version': 9,
        'storage_identifier': 'mcap',
        'duration': {'nanoseconds': max(0, end - start)},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': sum(e['message_count'] for e in entries),
        'topics_with_message_count': topics,
        'compression_format': '',
        'compression_mode': '',
        'relative_file_paths': [e['path'] for e in entries],
        'files': entries,
        'custom_data': {'vidseg_chunk_compression': compression},
        'ros_distro': ROS_DISTRO,
    }


def bag_metadata(bag_dir: str | Path, files: list[Path] | None = None, compression: str = 'none') -> dict:
    """rosbag2 version-9 ``metadata.yaml`` content built from the files' MCAP summaries.

    Args:
        bag_dir: the bag directory.
        files: files to include (default: every complete ``.mcap`` file in ``bag_dir``).
        compression: chunk compression used (only informative: rosbag2 lists storage-level chunk
            compression as no bag-level compression).
    """
    files = mcap_files(bag_dir) if files is None else files
    topics: dict[str, dict] = {}
    entries = []
    for path in files:
        with open(path, 'rb') as f:
            summary = make_reader(f).get_summary()
        if summary is None or summary.statistics is None:
            raise ValueError(f'{path} has no MCAP summary; run the recovery first')
        stats = summary.statistics
        for cid, channel in summary.channels.items():
            schema = summary.schemas.get(channel.schema_id)
            entry = topics.setdefault(channel.topic, _topic_entry(
                channel.topic, schema.name if schema else '', channel.message_encoding, channel.metadata, 0))
            entry['message_count'] += stats.channel_message_counts.get(cid, 0)
        entries.append(_file_entry(path.name, stats.message_count, stats.message_start_time,
                                   stats.message_end_time))
    return {_INFO: _bag_info(list(topics.values()), entries, compression)}


def write_metadata(bag_dir: str | Path, files: list[Path] | None = None, compression: str = 'none') -> Path:
    """Write ``metadata.yaml`` from the files' summaries (recovery; the recorder writes it from memory)."""
    return _write_text(Path(bag_dir), _dump(bag_metadata(bag_dir, files, compression)))


def _dump(data) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def _nested_yaml(key: str, item) -> str:
    """The lines of ``item`` as one element of the list ``key`` in metadata.yaml, as a dump of the whole writes
    them (same indentation, so the same line wrapping)."""
    return _dump({_INFO: {key: [item]}}).split('\n', 2)[2]


def _write_text(bag_dir: Path, text: str) -> Path:
    """Write ``metadata.yaml`` atomically (temporary file + rename) and return its path."""
    tmp = bag_dir / 'metadata.yaml.tmp'
    try:
        tmp.write_text(text)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()    # a part of it (a full disk), taking space a retry needs
        raise
    os.replace(tmp, bag_dir / 'metadata.yaml')
    return bag_dir / 'metadata.yaml'
