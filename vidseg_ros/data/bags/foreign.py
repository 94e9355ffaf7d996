"""Other recorders' files, for :mod:`vidseg_ros.data.bags.reader`: rosbag2's file compression (a split compressed
whole, ``bag_0.mcap.zstd``) and message compression (each message a zstd frame), and MCAP files of another profile
than ``ros2`` (``ros1`` from ``mcap convert``), which rosbags does not read."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from mcap.reader import make_reader

from vidseg_ros.text import bag_name, clip


def mcap_profile(path: Path) -> str | None:
    """The profile an MCAP file's header names (``ros2``, ``ros1``, ``''``); None when it has no readable header."""
    try:
        with path.open('rb') as f:
            return make_reader(f).get_header().profile
    except Exception:  # noqa: BLE001 - not an MCAP header: rosbags' reader says what is wrong
        return None


def ros2_type(name: str, encoding: str) -> str:
    """A schema name as the typestores name it: ROS 1 and ``mcap convert`` write ``sensor_msgs/Image``."""
    parts = name.split('/')
    return f'{parts[0]}/msg/{parts[1]}' if encoding == 'ros1' and len(parts) == 2 else name


def read_plain_mcap(path: Path, topics, start_ns, stop_ns,
                    found: dict[str, str]) -> Iterator[tuple[str, str, int, bytes, str]]:
    """An intact MCAP file with the ``mcap`` reader, in log-time order, as (topic, msgtype, log time, data, ``cdr``
    or ``ros1``): one of another profile than ``ros2`` (``ros1`` from ``mcap convert``, ``''``), which rosbags does not
    read, or one split of many (rosbags opens one 17 times slower); a file without summary raises (and is salvaged)."""
    with path.open('rb') as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        if summary is None or not summary.chunk_indexes and summary.statistics is None:
            raise ValueError('no summary section (a recorder killed mid-write?)')
        kinds = {c.id: (bag_name(c.topic), ros2_type(summary.schemas[c.schema_id].name, c.message_encoding)
                        if c.schema_id in summary.schemas else '', c.message_encoding)
                 for c in summary.channels.values()}
        found.update({topic: msgtype for topic, msgtype, _ in kinds.values()})
        wanted = {i for i, (topic, _, enc) in kinds.items()
                  if enc in ('cdr', 'ros1') and (not topics or topic in topics)}
        messages = reader.iter_messages(starting_at=start_ns, ending_before=stop_ns, log_time_order=True)
        for _, channel, message in messages:
            if channel.id in wanted and (stop_ns is None or message.log_time < stop_ns):
                topic, msgtype, enc = kinds[channel.id]
                yield topic, msgtype, message.log_time, unpacked(message.data, enc), enc


# output of one decompress call: a damaged block loses the output of the call that meets it (the 840 kB before an
# error 840 kB into a split of still frames were all lost at 1 MB steps)
_OUT_STEP = 1 << 16


def unzstd(file: Path, tmp: Path, warn: Callable[[str], None]) -> Path:
    """A file-compressed split (``bag_0.mcap.zstd``) decompressed into folder ``tmp`` in small steps (a 1 MB read
    of a camera's still frames decompressed to 440 MB at once); a cut or damaged stream as far as it decodes
    (warned: the file is then salvaged like a cut one)."""
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:       # what rosbags decompresses with: its dependency there
        from backports import zstd
    out = tmp / file.name[:-len('.zstd')]
    with file.open('rb') as f, out.open('wb') as o:
        d, data, started = zstd.ZstdDecompressor(), b'', False
        try:
            while True:
                if d.eof:       # a file of several frames: the next one
                    data, d, started = d.unused_data, zstd.ZstdDecompressor(), False
                if d.needs_input and not data:
                    data = f.read(1 << 20)
                    if not data:
                        break
                o.write(d.decompress(data, max_length=_OUT_STEP))
                data, started = b'', True
        except zstd.ZstdError as e:
            warn(f'{clip(file)}: damaged zstd stream after {o.tell()} decompressed bytes ({clip(e)}); '
                            'reading what it held')
            return out
        if started and not d.eof:       # a frame without its end
            warn(f'{clip(file)}: the zstd stream is cut short ({o.tell()} bytes decompressed); reading '
                            'what it held')
    return out


_ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'


def unpacked(data: bytes, fmt: str) -> bytes:
    """A message's bytes; rosbag2's message compression stores each as a zstd frame (CDR starts 00 0x, never
    with the zstd magic), which its metadata.yaml says but a salvaged or lone file does not."""
    if fmt == 'cdr' and data[:4] == _ZSTD_MAGIC:
        import zstandard
        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        except zstandard.ZstdError:     # a damaged message: left as it is, its frame fails to decode (counted)
            pass
    return data
