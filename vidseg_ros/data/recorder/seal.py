"""Close an MCAP file where its last complete chunk ends, after a write failed: the summary is appended there.

When a write fails (EFBIG from a file-size limit, EIO, a full disk that even the reserve could not
cover), ``BagWriter.abandon`` cuts the file back to the end of its last complete chunk, as a SIGKILL
would leave it: readable only after ``vidseg bag-recover``. But the cut gave back the space of the
chunk that failed, and a summary is small (the definitions, one index entry per chunk, statistics),
so :func:`seal` writes it right there and the file opens in every reader as it is.

The summary is rebuilt from the file itself (chunk headers, message indexes, definitions inside the
chunks), never from the writer's memory, which the failed write left half-updated. Only headers are
read: definitions are looked for in the first chunks (split by ``mcap``), until every channel that has
messages is known.
"""
from __future__ import annotations

import io
import mmap
import os
import struct
import zlib
from collections import Counter
from pathlib import Path

from mcap.data_stream import ReadDataStream, RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (Channel, Chunk, ChunkIndex, DataEnd, Header, MessageIndex, Schema, Statistics,
                          SummaryOffset)
from mcap.stream_reader import breakup_chunk
from mcap.writer import MCAP0_MAGIC

_RECORD = struct.Struct('<BQ')                 # opcode, body length
_CHUNK = struct.Struct('<QQQII')               # start, end, uncompressed size and CRC, compression length
_FOOTER_HEAD = struct.Struct('<BQQQ')          # opcode, length, summary start, summary offset start
_CLOSED = {Opcode.DATA_END, Opcode.FOOTER, Opcode.CHUNK_INDEX, Opcode.STATISTICS, Opcode.SUMMARY_OFFSET}


class _Index:
    """What the summary needs, gathered from the data section."""

    def __init__(self):
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self.chunks: list[ChunkIndex] = []
        self.counts: Counter = Counter()   # messages per channel id

    def defined(self) -> bool:
        """Every channel that has messages is known, with its schema (0 = none)."""
        return all(c in self.channels and self.channels[c].schema_id in self.schemas.keys() | {0}
                   for c in self.counts)


def seal(path: str | Path, library: str = 'vidseg_ros recorder (rosbag2-compatible)') -> int:
    """Append DataEnd, summary and footer to an MCAP file that ends right after a complete chunk and its
    message indexes (an empty file becomes an empty MCAP). Returns the messages it holds.

    Raises:
        ValueError: the file does not end on a record boundary, already has a summary, holds messages
            outside chunks, or misses the definition of a channel: nothing is appended.
        OSError: the tail could not be written (still no room); the file is cut back to its old end.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        head = b''
        if size == 0:   # cut before its first chunk: a valid, empty file
            builder = RecordBuilder()
            Header('ros2', library).write(builder)
            head = MCAP0_MAGIC + builder.end()
            index = _Index()
        else:
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as buf:
                index = _scan(buf, size, path)
        tail = head + _summary(index, size + len(head))
        try:
            view, offset = memoryview(tail), size
            while view.nbytes:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    return sum(index.counts.values())


def _scan(buf, size: int, path: Path) -> _Index:
    if buf[:len(MCAP0_MAGIC)] != MCAP0_MAGIC:
        raise ValueError(f'{path} is not an MCAP file')
    index, pos = _Index(), len(MCAP0_MAGIC)
    while pos < size:
        if pos + _RECORD.size > size:
            raise ValueError(f'{path} ends inside a record header at byte {pos}')
        op, length = _RECORD.unpack_from(buf, pos)
        body, end = pos + _RECORD.size, pos + _RECORD.size + length
        if end > size:
            raise ValueError(f'{path} ends inside a record at byte {pos}')
        if op in _CLOSED:
            raise ValueError(f'{path} already has a summary or footer')
        if op == Opcode.CHUNK:
            index.chunks.append(_chunk(buf, pos, body, end, path))
        elif op == Opcode.MESSAGE:   # not counted by any index: the summary would say 0 messages
            raise ValueError(f'{path} has a message outside any chunk at byte {pos}: only chunked files can be sealed')
        elif op == Opcode.MESSAGE_INDEX:
            if not index.chunks:
                raise ValueError(f'{path}: message index before any chunk at byte {pos}')
            entry = MessageIndex.read(ReadDataStream(io.BytesIO(buf[body:end])))
            chunk = index.chunks[-1]
            chunk.message_index_offsets[entry.channel_id] = pos
            chunk.message_index_length += end - pos   # the indexes follow their chunk back to back
            index.counts[entry.channel_id] += len(entry.records)
        elif op in (Opcode.SCHEMA, Opcode.CHANNEL):
            _define((Schema if op == Opcode.SCHEMA else Channel).read(ReadDataStream(io.BytesIO(buf[body:end]))),
                    index)
        pos = end
    for chunk in index.chunks:   # definitions come before their first message: the first chunks hold them
        if index.defined():
            break
        _chunk_definitions(buf, chunk, index)
    if not index.defined():
        raise ValueError(f'{path}: the definition of a channel with messages was not found')
    return index


def _chunk(buf, pos: int, body: int, end: int, path: Path) -> ChunkIndex:
    start, stop, uncompressed, _, name_len = _CHUNK.unpack_from(buf, body)
    name_at = body + _CHUNK.size
    compression = bytes(buf[name_at:name_at + name_len]).decode()
    (records_len,) = struct.unpack_from('<Q', buf, name_at + name_len)
    if name_at + name_len + 8 + records_len != end:
        raise ValueError(f'{path}: the chunk at byte {pos} has inconsistent lengths')
    return ChunkIndex(message_start_time=start, message_end_time=stop, chunk_start_offset=pos,
                      chunk_length=end - pos, message_index_offsets={}, message_index_length=0,
                      compression=compression, compressed_size=records_len, uncompressed_size=uncompressed)


def _chunk_definitions(buf, chunk: ChunkIndex, index: _Index) -> None:
    """The schemas and channels inside one chunk, split by ``mcap``'s own ``breakup_chunk``."""
    body = buf[chunk.chunk_start_offset + _RECORD.size:chunk.chunk_start_offset + chunk.chunk_length]
    for record in breakup_chunk(Chunk.read(ReadDataStream(io.BytesIO(body)))):
        _define(record, index)


def _define(record, index: _Index) -> None:
    """Keep a schema or channel definition (the first of each id)."""
    if isinstance(record, Schema):
        index.schemas.setdefault(record.id, record)
    elif isinstance(record, Channel):
        index.channels.setdefault(record.id, record)


def _summary(index: _Index, base: int) -> bytes:
    """DataEnd, the summary section (as mcap's Writer lays it out), footer and closing magic, for a
    file whose data section ends at byte ``base``."""
    chunks, counts = index.chunks, index.counts
    stats = Statistics(message_count=sum(counts.values()), schema_count=len(index.schemas),
                       channel_count=len(index.channels), attachment_count=0, metadata_count=0,
                       chunk_count=len(chunks),
                       message_start_time=min((c.message_start_time for c in chunks), default=0),
                       message_end_time=max((c.message_end_time for c in chunks), default=0),
                       channel_message_counts=dict(counts))
    builder = RecordBuilder()
    DataEnd(data_section_crc=0).write(builder)   # 0: not computed (the data was not all read)
    summary_at = builder.count
    offsets = []
    for opcode, records in ((Opcode.SCHEMA, index.schemas.values()), (Opcode.CHANNEL, index.channels.values()),
                            (Opcode.STATISTICS, [stats]), (Opcode.CHUNK_INDEX, chunks)):
        group_start = builder.count
        for record in records:
            record.write(builder)
        if builder.count > group_start:
            offsets.append(SummaryOffset(group_opcode=opcode, group_start=base + group_start,
                                         group_length=builder.count - group_start))
    offsets_at = builder.count
    for offset in offsets:
        offset.write(builder)
    data = builder.end()
    footer = _FOOTER_HEAD.pack(Opcode.FOOTER, 20, base + summary_at, base + offsets_at)
    crc = zlib.crc32(footer, zlib.crc32(data[summary_at:]))
    return data + footer + struct.pack('<I', crc) + MCAP0_MAGIC
