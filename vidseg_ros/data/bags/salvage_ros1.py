"""Read the messages of a ROS 1 bag that has no index: what a killed ``rosbag record`` leaves (``*.bag.active``,
or a ``.bag`` cut short), which rosbags' reader refuses.

A ROS 1 bag (format 2.0) is a sequence of records ``<header length><header><data length><data>``, the header
being ``name=value`` fields; ``op`` says what a record is. Messages (op 2) live in chunks (op 5), raw or bz2 /
lz4 compressed, after the connection (op 7) that names their topic and type. ``rosbag record`` writes a chunk's
header with sizes 0 and fills them in when it closes the chunk, so a killed recording ends in a chunk that
claims to be empty: its data runs to the end of the file. The index (op 4, op 6, the connections again) comes
last and is not needed. A chunk cut by the end of the file is read as far as it decompresses; at a record that
does not frame the walk reads on from the next record that frames as a chunk (reported), inside a chunk it stops.
"""
from __future__ import annotations

import bz2
import mmap
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

MAGIC = b'#ROSBAG V2.0\n'
MSG_DATA, CHUNK, CONNECTION = 0x02, 0x05, 0x07
_HEADER_LIMIT = 1 << 20     # a record header is a few fields (the message definition is in the data)


class Ros1Connection(NamedTuple):
    """A topic of a ROS 1 bag: its name and ROS 1 type (``sensor_msgs/Image``)."""

    topic: str
    msgtype: str


def fields(buf, start: int = 0, end: int | None = None) -> dict[str, bytes]:
    """The ``name=value`` fields of a record header (or a connection header) in ``buf[start:end]``;
    ValueError when they do not frame."""
    end = len(buf) if end is None else end
    out, pos = {}, start
    while pos < end:
        if pos + 4 > end:
            raise ValueError('field length cut')
        n = struct.unpack_from('<I', buf, pos)[0]
        pos += 4
        if pos + n > end:
            raise ValueError('field runs past its header')
        name, eq, value = bytes(buf[pos:pos + n]).partition(b'=')
        if not eq:
            raise ValueError('field without "="')
        out[name.decode('ascii', 'replace')] = value
        pos += n
    return out


def _record(buf, pos: int, size: int) -> tuple[dict[str, bytes], int, int] | None:
    """(header fields, data start, data length as stated) of the record at ``pos``; None when it does not frame."""
    if pos + 8 > size:
        return None
    head_len = struct.unpack_from('<I', buf, pos)[0]
    data_at = pos + 4 + head_len + 4
    if head_len > _HEADER_LIMIT or data_at > size:
        return None
    try:
        header = fields(buf, pos + 4, pos + 4 + head_len)
    except ValueError:
        return None
    if len(header.get('op', b'')) != 1:
        return None
    return header, data_at, struct.unpack_from('<I', buf, data_at - 4)[0]


def _decompress(compression: str, data) -> bytes:
    """A chunk's records, as far as a cut stream decodes."""
    if compression == 'none':
        return bytes(data)
    if compression == 'bz2':
        return bz2.BZ2Decompressor().decompress(data)
    if compression == 'lz4':
        import lz4.frame
        return lz4.frame.LZ4FrameDecompressor().decompress(data)
    raise ValueError(f'unknown chunk compression {compression[:40]!r}')


def salvage_ros1(path: str | Path, warn: Callable[[str], None]) -> Iterator[tuple[Ros1Connection, int, bytes]]:
    """(connection, log time in ns, ROS 1 message bytes) of every message the file still holds, in file order."""
    path = Path(path)
    with path.open('rb') as f:
        size = path.stat().st_size
        if size < len(MAGIC) or f.read(len(MAGIC)) != MAGIC:
            warn(f'{str(path)[:300]}: not a ROS 1 bag (format 2.0); nothing read')
            return
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield from _walk(buf, len(MAGIC), size, {}, str(path)[:300], warn)
        finally:
            buf.close()


def _walk(buf, pos: int, size: int, conns: dict, where: str, warn, chunked: bool = False) -> Iterator:
    """The messages of the records from ``pos`` to ``size`` (a file, or one chunk's records)."""
    count = 0
    while pos < size:
        rec = _record(buf, pos, size)
        if rec is None:
            if not chunked and (after := _next_chunk(buf, pos, size)) is not None:
                warn(f'{where}: bytes {pos} to {after} unreadable; read on from the next chunk')
                pos = after
                continue
            if not chunked or size - pos >= 8:      # a chunk cut mid-record just ends
                warn(f'{where}: unreadable from byte {pos} of {"a chunk" if chunked else "the file"} on '
                     f'({size - pos} bytes); {count} message(s) read before')
            return
        header, at, length = rec
        op = header['op'][0]
        end = at + length
        if op == CHUNK and (length == 0 or end > size):
            # the chunk rosbag record was writing when killed (sizes still 0), one cut short, or one whose size
            # field is damaged: chunks after it are read too
            end = (_next_chunk(buf, at, size) if not chunked else None) or size
            if length:
                warn(f'{where}: the chunk at byte {pos} runs past the end of the file: read as far as it '
                     f'decompresses{" (up to the next chunk)" if end < size else ""}')
        elif end > size:
            if op == MSG_DATA:
                warn(f'{where}: the last message is cut short at byte {size}')
            return
        if op == CONNECTION:
            _connection(header, buf, at, end, conns)
        elif op == MSG_DATA:
            raw_conn = header.get('conn', b'')      # a damaged one of another length raised struct.error out
            conn = conns.get(struct.unpack('<I', raw_conn)[0]) if len(raw_conn) == 4 else None
            sec, nsec = struct.unpack('<II', header['time']) if len(header.get('time', b'')) == 8 else (0, 0)
            if conn is not None:
                count += 1
                yield conn, sec * 10**9 + nsec, bytes(buf[at:end])
        elif op == CHUNK:
            try:
                records = _decompress(header.get('compression', b'none').decode('ascii', 'replace'), buf[at:end])
            except (ValueError, OSError, RuntimeError, EOFError) as e:
                warn(f'{where}: a chunk at byte {pos} does not decompress ({str(e)[:200]}); skipped')
                records = b''
            for item in _walk(records, 0, len(records), conns, where, warn, chunked=True):
                count += 1
                yield item
        pos = end


_CHUNK_OP = struct.pack('<I', 4) + b'op=' + bytes([CHUNK])     # the op field of a chunk's header


def _next_chunk(buf, pos: int, size: int) -> int | None:
    """The start of the next record after ``pos`` that frames as a chunk: a flipped byte in one record's framing
    cost every chunk after it. The op field lies somewhere in the few fields of the chunk's header."""
    at = pos
    while (at := buf.find(_CHUNK_OP, at + 1, size)) != -1:
        for start in range(max(pos + 1, at - 64), at - 3):
            rec = _record(buf, start, size)
            if rec is not None and rec[0]['op'] == bytes([CHUNK]) and {'compression', 'size'} <= rec[0].keys() \
                    and at + len(_CHUNK_OP) <= rec[1] - 4:
                return start
    return None


def _connection(header: dict[str, bytes], buf, at: int, end: int, conns: dict) -> None:
    """Register a connection record (its id in the header, its type in the connection header of its data)."""
    try:
        cid = struct.unpack('<I', header['conn'][:4])[0]
        info = fields(buf, at, end)
        conns[cid] = Ros1Connection(header.get('topic', info.get('topic', b'')).decode('utf-8', 'replace'),
                                    info.get('type', b'').decode('utf-8', 'replace'))
    except (KeyError, ValueError, struct.error):
        pass
