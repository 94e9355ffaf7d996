"""Read rosbag2 (MCAP, sqlite3) and ROS 1 bags without ROS, surviving truncated and corrupt files.

``read_messages`` first reads a bag with ``rosbags``' AnyReader (time-ordered, all formats). When
that fails (a recorder killed mid-write leaves an MCAP without summary, a disk error flips bytes,
a ``.db3`` loses pages) it warns and falls back to a salvage reader that walks the file record by
record, skips what is damaged and yields every message it can still read. Messages come out raw
(CDR or ROS 1 bytes) so that worker processes can deserialise and decode them in parallel.
"""
from __future__ import annotations

import logging
import mmap
import re
import shutil
import sqlite3
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

LOG = logging.getLogger(__name__)
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
_ROS2 = get_typestore(Stores.ROS2_HUMBLE)
_ROS1 = get_typestore(Stores.ROS1_NOETIC)


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


def bag_files(path: str | Path) -> list[Path]:
    """The storage files of a bag folder (``*.mcap``, ``*.db3``) or the file itself."""
    path = Path(path)
    if path.is_dir():
        # Natural order: recorder splits are named bag_2 ... bag_10.
        files = sorted(list(path.glob('*.mcap')) + list(path.glob('*.db3')),
                       key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', p.name)])
        if not files:
            raise FileNotFoundError(f'{path}: no .mcap or .db3 files in this bag folder')
        return files
    if not path.is_file():
        raise FileNotFoundError(f'bag {path} does not exist')
    return [path]


def read_messages(path: str | Path, topics: list[str] | None = None, start_ns: int | None = None,
                  stop_ns: int | None = None, warnings: list[str] | None = None) -> Iterator[RawMessage]:
    """Every readable message of one bag, in time order when the bag is intact.

    Args:
        path: bag folder (rosbag2), ``.mcap``, ``.db3`` or ROS 1 ``.bag`` file.
        topics: keep only these topics (None = all).
        start_ns, stop_ns: keep log times in [start_ns, stop_ns).
        warnings: damage reports are appended here (and logged) so callers can summarise them.
    """
    warnings = warnings if warnings is not None else []
    seen: set[tuple[str, int]] = set()
    try:
        for msg in _read_any(Path(path), topics, start_ns, stop_ns):
            seen.add((msg.topic, msg.log_time_ns))
            yield msg
        return
    except Exception as e:  # noqa: BLE001 - any reader failure means damage; salvage what is left
        _warn(warnings, f'{path}: regular reader failed after {len(seen)} messages '
                        f'({type(e).__name__}: {e}); salvaging the rest record by record')
    for file in bag_files(path):
        for msg in _salvage(file, warnings):
            if topics and msg.topic not in topics:
                continue
            if (start_ns is not None and msg.log_time_ns < start_ns) or \
                    (stop_ns is not None and msg.log_time_ns >= stop_ns):
                continue
            if (msg.topic, msg.log_time_ns) in seen:
                continue
            seen.add((msg.topic, msg.log_time_ns))
            yield msg


def list_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (msgtype, message count), from a full read when the bag index is damaged."""
    out: dict[str, tuple[str, int]] = {}
    try:
        with AnyReader([Path(path)], default_typestore=_ROS2) as reader:
            return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
    except Exception:  # noqa: BLE001
        for msg in read_messages(path):
            t, n = out.get(msg.topic, (msg.msgtype, 0))
            out[msg.topic] = (t, n + 1)
    return out


def _warn(warnings: list[str], text: str) -> None:
    warnings.append(text)
    LOG.warning(text)


def _read_any(path: Path, topics, start_ns, stop_ns) -> Iterator[RawMessage]:
    with AnyReader([path], default_typestore=_ROS2) as reader:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if not conns:       # an empty selection means "all" to AnyReader
            LOG.info('%s: none of the topics %s', path, topics)
            return
        for conn, t, raw in reader.messages(connections=conns, start=start_ns, stop=stop_ns):
            fmt = 'ros1' if path.suffix == '.bag' else 'cdr'
            yield RawMessage(str(path), conn.topic, conn.msgtype, t, bytes(raw), fmt)


def _salvage(file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    if file.suffix == '.mcap':
        yield from _salvage_mcap(file, warnings)
    elif file.suffix == '.db3':
        yield from _salvage_sqlite(file, warnings)
    else:
        _warn(warnings, f'{file}: no salvage reader for this format; damaged part skipped')


# --- MCAP: walk records; a bad chunk is skipped, a bad length resynchronises on the next chunk ---
_ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END, _OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


def _salvage_mcap(file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    with file.open('rb') as f:
        size = file.stat().st_size
        if size < 8:
            _warn(warnings, f'{file}: empty or truncated before the MCAP header')
            return
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield from _walk_mcap(buf, size, file, warnings)
        finally:
            buf.close()


def _walk_mcap(buf, size: int, file: Path, warnings: list[str]) -> Iterator[RawMessage]:
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, int]] = {}
    _summary_definitions(buf, size, schemas, channels)
    pos = 8
    while pos + 9 <= size:
        op, length = buf[pos], struct.unpack_from('<Q', buf, pos + 1)[0]
        end = pos + 9 + length
        if op == 0 or end > size or (op == _OP_CHUNK and length < 40):
            nxt = _next_chunk(buf, pos + 1, size)
            if nxt is not None:
                _warn(warnings, f'{file}: damaged record at byte {pos}; resuming at byte {nxt}')
                pos = nxt
                continue
            if op == _OP_CHUNK and end > size:
                # Truncated mid-chunk (recorder killed): the complete messages before the cut survive.
                n = yield from _chunk_messages(buf[pos + 9:size], schemas, channels, file, partial=True)
                _warn(warnings, f'{file}: truncated at byte {size} inside a chunk; '
                                f'{n} message(s) recovered from that chunk')
            elif op not in (_OP_DATA_END, _OP_FOOTER):
                _warn(warnings, f'{file}: unreadable bytes from {pos} to the end ({size - pos} B)')
            return
        try:
            if op == _OP_CHUNK:
                yield from _chunk_messages(buf[pos + 9:end], schemas, channels, file)
            else:
                msg = _mcap_record(op, bytes(buf[pos + 9:end]), schemas, channels, file)
                if msg is not None:
                    yield msg
        except Exception as e:  # noqa: BLE001
            _warn(warnings, f'{file}: skipped the rest of a damaged '
                            f'{"chunk" if op == _OP_CHUNK else "record"} at byte {pos} '
                            f'({type(e).__name__}: {e})')
        if op == _OP_FOOTER:
            return
        pos = end


def _summary_definitions(buf, size: int, schemas: dict, channels: dict) -> None:
    """Schemas and channels from the summary section, so a lost first chunk does not orphan the rest."""
    if size < 8 + 9 + 20 or buf[size - 8 - 29] != _OP_FOOTER:
        return
    try:
        summary_start = struct.unpack_from('<Q', buf, size - 8 - 20)[0]
        pos = summary_start
        while 8 < pos < size - 8 - 29:
            op, length = buf[pos], struct.unpack_from('<Q', buf, pos + 1)[0]
            if op in (_OP_SCHEMA, _OP_CHANNEL):
                _mcap_record(op, bytes(buf[pos + 9:pos + 9 + length]), schemas, channels, Path())
            pos += 9 + length
    except (struct.error, ValueError, UnicodeDecodeError):
        LOG.debug('MCAP summary unreadable; relying on in-chunk definitions')


def _chunk_messages(body, schemas: dict, channels: dict, file: Path, partial: bool = False):
    """Yield the messages of one chunk body; returns how many (generator return value)."""
    n = 0
    for rop, rbody in _chunk_records(bytes(body), partial):
        msg = _mcap_record(rop, rbody, schemas, channels, file)
        if msg is not None:
            n += 1
            yield msg
    return n


def _next_chunk(buf, start: int, size: int) -> int | None:
    """Offset of the next plausible chunk record (its compression string anchors the search)."""
    best = None
    for comp in (b'zstd', b'lz4', b''):
        needle = struct.pack('<I', len(comp)) + comp
        i = start + 37
        while True:
            j = buf.find(needle, i)
            if j < 0 or (best is not None and j - 37 >= best):
                break
            cand = j - 37
            if buf[cand] == _OP_CHUNK:
                length = struct.unpack_from('<Q', buf, cand + 1)[0]
                if 40 < length and cand + 9 + length <= size:
                    best = cand
                    break
            i = j + 1
            if not comp and j - start > 1 << 24:   # uncompressed anchors are common: bound the scan
                break
    return best


def _chunk_records(body: bytes, partial: bool = False) -> Iterator[tuple[int, bytes]]:
    usize, ucrc, clen = struct.unpack_from('<QIi', body, 16)
    comp = body[32:32 + clen].decode()
    off = 32 + clen
    rlen = struct.unpack_from('<Q', body, off)[0]
    data = body[off + 8:off + 8 + rlen]
    if len(data) != rlen and not partial:
        raise ValueError('chunk records are cut short')
    if comp == 'zstd':
        import zstandard
        # A streaming decompressor returns what it can from a cut-off frame; one-shot would fail.
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    elif comp == 'lz4':
        import lz4.frame
        data = lz4.frame.LZ4FrameDecompressor().decompress(data)
    elif comp:
        raise ValueError(f'unknown chunk compression {comp!r}')
    if ucrc and not partial and zlib.crc32(data) != ucrc:
        raise ValueError('chunk CRC mismatch')
    pos = 0
    while pos + 9 <= len(data):
        op, length = data[pos], struct.unpack_from('<Q', data, pos + 1)[0]
        if pos + 9 + length > len(data):
            if not partial:
                raise ValueError(f'record length {length} runs past the chunk end')
            return
        yield op, data[pos + 9:pos + 9 + length]
        pos += 9 + length


def _mcap_record(op: int, body: bytes, schemas: dict, channels: dict, file: Path) -> RawMessage | None:
    if op == _OP_SCHEMA:
        sid, = struct.unpack_from('<H', body, 0)
        schemas[sid] = _mcap_string(body, 2)[0]
    elif op == _OP_CHANNEL:
        cid, sid = struct.unpack_from('<HH', body, 0)
        topic, _ = _mcap_string(body, 4)
        channels[cid] = (topic, sid)
    elif op == _OP_MESSAGE:
        cid, _seq, log_time = struct.unpack_from('<HIQ', body, 0)
        if cid not in channels:
            raise ValueError(f'message on unknown channel {cid} (its definition was lost)')
        topic, sid = channels[cid]
        return RawMessage(str(file), topic, schemas.get(sid, ''), log_time, body[22:])
    return None


def _mcap_string(body: bytes, off: int) -> tuple[str, int]:
    n, = struct.unpack_from('<I', body, off)
    return body[off + 4:off + 4 + n].decode(), off + 4 + n


# --- sqlite3: read row by row so that a malformed page costs only its rows ---
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
        topics = {i: (n, t) for i, n, t in con.execute('SELECT id, name, type FROM topics')}
    except sqlite3.DatabaseError as e:
        _warn(warnings, f'{file}: cannot read the topic table ({e}); nothing salvaged')
        return
    try:
        max_id = con.execute('SELECT max(id) FROM messages').fetchone()[0] or 0
    except sqlite3.DatabaseError:
        max_id = 10**7
    lost, errors_run, misses, last_ok = 0, 0, 0, 0
    for rid in range(1, max_id + 1):
        try:
            row = con.execute('SELECT topic_id, timestamp, data FROM messages WHERE id = ?',
                              (rid,)).fetchone()
        except sqlite3.DatabaseError:
            lost, errors_run, misses = lost + 1, errors_run + 1, misses + 1
            if misses > 10000:
                break
            continue
        misses += row is None
        if row is None:
            if misses > 10000:
                break
            continue
        misses, errors_run, last_ok = 0, 0, rid
        tid, t, data = row
        data = bytes(data)
        if data[:4] == _ZSTD_MAGIC:     # rosbag2 per-message compression
            import zstandard
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if tid in topics:
            yield RawMessage(str(file), topics[tid][0], topics[tid][1], t, data)
    if lost - errors_run:
        _warn(warnings, f'{file}: {lost - errors_run} message row(s) unreadable')
    if errors_run:
        _warn(warnings, f'{file}: message rows after id {last_ok} are unreadable (lost pages)')
    con.close()


