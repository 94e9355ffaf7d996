"""Read every record an MCAP file still holds: truncated (recorder killed) or damaged (flipped bytes).

:func:`salvage_records` walks the data section record by record and yields the ``mcap.records``
``Schema``, ``Channel`` and ``Message`` objects it can trust, each definition before the first message
that needs it. It is shared by the recovery (:mod:`vidseg_ros.data.bags.recover`, which rewrites them
into a complete file) and the damaged-bag reader (:mod:`vidseg_ros.data.bags.reader`).

- An intact chunk (length in bounds, CRC right) is split by ``mcap``'s own ``breakup_chunk``.
- A chunk that fails its CRC or its decompression, or is cut by the end of the file, is walked
  message by message: a record is kept when it parses and passes a sanity check (channel known,
  length inside the chunk, log time inside the chunk's time range, or within an hour of the last
  kept message when that range itself is damaged). After a bad record the walk resynchronises on
  the next record that passes the same check, so one flipped byte costs at most the message it hit.
  The message indexes that follow a chunk give how many messages it held: the difference to what
  was kept is reported as skipped. A kept message from a damaged chunk may carry damaged payload
  bytes (the chunk CRC cannot say which): they are counted as ``salvaged``.
- A record whose length runs past the end of the file (or a garbage opcode) resynchronises on the
  next plausible chunk.
- A chunk compressed with a codec whose package is missing (zstandard, lz4) raises :class:`MissingCodec`:
  it is not damage, and reading on would drop every message of every such chunk.

Every record body is parsed by ``mcap.records``; raw bytes are read with ``struct`` only for what is
ours: the framing (opcode + length, checked before trusting it) and the resync checks.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Footer, Message, MessageIndex, Schema
from mcap.stream_reader import MAGIC_SIZE, breakup_chunk
from mcap.writer import MCAP0_MAGIC as MCAP_MAGIC
_OPCODES = {int(o) for o in Opcode}
_HOUR_NS = 3600 * 10**9
_CHUNK_HEAD = 8 + 8 + 8 + 4 + 4  # start, end, uncompressed size, crc, compression string length
_OUT_STEP = 1 << 16
# chunk compression -> (the module mcap (de)compresses it with, its pip package): optional dependencies
CODECS = {'zstd': ('zstandard', 'zstandard'), 'lz4': ('lz4.frame', 'lz4')}


class MissingCodec(ValueError):
    """A chunk is compressed with a codec whose package is not installed (a user's setup, not damage)."""

    def __init__(self, compression: str):
        package = CODECS[compression][1]
        super().__init__(f'{compression} chunks need the {package} package (pip install {package})')


def require_codec(compression: str) -> None:
    """Raise :class:`MissingCodec` when chunks compressed with ``compression`` cannot be decompressed here."""
    if compression not in CODECS:
        return
    try:
        importlib.import_module(CODECS[compression][0])
    except ImportError:
        raise MissingCodec(compression) from None


def chunk_compressions(path: str | Path) -> set[str]:
    """The compressions of the chunks found by hopping from record to record, without decompressing (cheap:
    only the record headers are read). Stops at the first record that does not frame: past damage the
    salvage itself checks each chunk it reaches."""
    found: set[str] = set()
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        if size < MAGIC_SIZE + 9 or f.read(MAGIC_SIZE) != MCAP_MAGIC:
            return found
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            pos = MAGIC_SIZE
            while pos + 9 <= size:
                op, length = _header(buf, pos)
                if op not in _OPCODES or pos + 9 + length > size or op in (Opcode.DATA_END, Opcode.FOOTER):
                    break
                if op == Opcode.CHUNK and length >= _CHUNK_HEAD:
                    name_at = pos + 9 + _CHUNK_HEAD
                    clen = struct.unpack_from('<I', buf, name_at - 4)[0]
                    if clen <= 8 and name_at + clen <= size:
                        found.add(bytes(buf[name_at:name_at + clen]).decode('ascii', 'replace'))
                pos += 9 + length
        finally:
            buf.close()
    return found


@dataclasses.dataclass
class SalvageStats:
    """What :func:`salvage_records` found in one file.

    Attributes:
        messages: messages yielded (intact + salvaged).
        salvaged: of those, messages kept from chunks that failed their CRC / decompression or were cut.
        skipped: messages of damaged chunks that could not be kept (from their message indexes).
        damaged_chunks: chunks that failed their CRC or decompression.
        bytes_skipped: bytes jumped over while resynchronising between records.
        truncated: True when the file ends inside a record (no summary: recorder killed).
        warnings: one line per damage found.
    """

    messages: int = 0
    salvaged: int = 0
    skipped: int = 0
    damaged_chunks: int = 0
    bytes_skipped: int = 0
    truncated: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)


def salvage_records(path: str | Path, stats: SalvageStats | None = None) -> Iterator[Schema | Channel | Message]:
    """Every trustworthy Schema, Channel and Message record of an MCAP file, in file order."""
    stats = stats if stats is not None else SalvageStats()
    path = Path(path)
    with path.open('rb') as f:
        size = path.stat().st_size
        if size < MAGIC_SIZE or f.read(MAGIC_SIZE) != MCAP_MAGIC:
            stats.warnings.append(f'{path}: not an MCAP file (no magic)')
            return
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            walker = _Walker(buf, size, path, stats)
            yield from walker.run()
            walker.close_damaged_count()
            for channel_id, n in walker.orphans.items():
                walker.warn(f'{n} message(s) of channel {channel_id} skipped: its definition was lost')
        finally:
            buf.close()


def _stream(body) -> ReadDataStream:
    return ReadDataStream(io.BytesIO(body))


def _header(buf, pos: int) -> tuple[int, int]:
    """(opcode, body length) of the record at ``pos``, whether or not it is a real record."""
    return buf[pos], struct.unpack_from('<Q', buf, pos + 1)[0]


class _Walker:
    def __init__(self, buf, size: int, path: Path, stats: SalvageStats):
        self.buf, self.size, self.path, self.stats = buf, size, path, stats
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self.announced: set[tuple[int, int]] = set()  # (opcode, id) already yielded
        self.last_time: int | None = None
        self.indexed = self.kept_in_damaged = -1  # message-index bookkeeping after a damaged chunk
        self.orphans: dict[int, int] = {}   # channel id -> messages skipped because its definition was lost

    def warn(self, text: str) -> None:
        self.stats.warnings.append(f'{self.path}: {text}')

    def run(self) -> Iterator:
        self._summary_definitions()
        buf, size, pos = self.buf, self.size, MAGIC_SIZE
        while pos + 9 <= size:
            op, length = _header(buf, pos)
            end = pos + 9 + length
            if op != Opcode.MESSAGE_INDEX:
                self.close_damaged_count()
            if op not in _OPCODES or end > size or (op == Opcode.CHUNK and length < _CHUNK_HEAD + 8):
                nxt = _next_chunk(buf, pos + 1, size)
                if nxt is not None:
                    self.warn(f'damaged record at byte {pos}; resuming at byte {nxt}')
                    self.stats.bytes_skipped += nxt - pos
                    pos = nxt
                    continue
                self.stats.truncated = True
                if op == Opcode.CHUNK and end > size:
                    n = self.stats.salvaged
                    yield from self._damaged_chunk(buf[pos + 9:size])
                    self.warn(f'truncated at byte {size} inside a chunk; '
                              f'{self.stats.salvaged - n} message(s) kept from that chunk')
                elif buf[pos:size].strip(b'\0'):
                    self.warn(f'unreadable bytes from {pos} to the end ({size - pos} B)')
                return
            body = buf[pos + 9:end]
            if op == Opcode.CHUNK:
                yield from self._chunk(body, pos)
            elif op in (Opcode.SCHEMA, Opcode.CHANNEL, Opcode.MESSAGE):
                try:
                    yield from self._record(op, body)
                except Exception as e:  # noqa: BLE001 - a torn record raises whatever its parser hits
                    self.warn(f'skipped a damaged record at byte {pos} ({type(e).__name__})')
            elif op == Opcode.MESSAGE_INDEX and self.indexed >= 0:
                try:
                    self.indexed += len(MessageIndex.read(_stream(body)).records)
                except Exception:  # noqa: BLE001
                    pass
            elif op in (Opcode.DATA_END, Opcode.FOOTER):
                return
            pos = end
        self.stats.truncated = True

    def close_damaged_count(self) -> None:
        if self.indexed >= 0:
            self.stats.skipped += max(0, self.indexed - self.kept_in_damaged)
            self.indexed = self.kept_in_damaged = -1

    def _summary_definitions(self) -> None:
        """Schemas and channels from the summary, so a lost first chunk does not orphan the rest."""
        buf, size = self.buf, self.size
        footer_at = size - MAGIC_SIZE - 9 - 20
        if footer_at < MAGIC_SIZE or buf[footer_at] != Opcode.FOOTER:
            return
        try:
            pos = Footer.read(_stream(buf[footer_at + 9:footer_at + 29])).summary_start
            while MAGIC_SIZE < pos < footer_at:
                op, length = _header(buf, pos)
                if op in (Opcode.SCHEMA, Opcode.CHANNEL):
                    for _ in self._record(op, buf[pos + 9:pos + 9 + length]):
                        pass  # known now; yielded before the first message that uses them
                pos += 9 + length
        except Exception:  # noqa: BLE001 - a damaged summary: rely on the in-chunk definitions
            pass

    def _record(self, op: int, body) -> Iterator:
        """Parse one Schema / Channel / Message; yield it (definitions once, before their messages)."""
        if op == Opcode.SCHEMA:
            schema = Schema.read(_stream(body))
            self.schemas.setdefault(schema.id, schema)
        elif op == Opcode.CHANNEL:
            channel = Channel.read(_stream(body))
            self.channels.setdefault(channel.id, channel)
        else:
            message = Message.read(_stream(body), len(body))
            yield from self._emit(message)

    def _emit(self, message: Message) -> Iterator:
        channel = self.channels.get(message.channel_id)
        if channel is None:     # its definition was lost with a damaged record: skipped and counted (raised, this
            # ended the whole read, the other channels and splits too)
            self.orphans[message.channel_id] = self.orphans.get(message.channel_id, 0) + 1
            self.stats.skipped += 1
            return
        schema = self.schemas.get(channel.schema_id)
        if schema is not None and (Opcode.SCHEMA, schema.id) not in self.announced:
            self.announced.add((Opcode.SCHEMA, schema.id))
            yield schema
        if (Opcode.CHANNEL, channel.id) not in self.announced:
            self.announced.add((Opcode.CHANNEL, channel.id))
            yield channel
        self.last_time = message.log_time
        self.stats.messages += 1
        yield message

    def _chunk(self, body, pos: int) -> Iterator:
        try:
            chunk = Chunk.read(_stream(body))
            require_codec(chunk.compression)    # a missing package is no damage: raised, not salvaged
            records = breakup_chunk(chunk, validate_crc=True)
        except MissingCodec:
            raise
        except Exception as e:  # noqa: BLE001 - CRC mismatch, corrupt compressed data, bad lengths
            self.stats.damaged_chunks += 1
            self.warn(f'chunk at byte {pos} is damaged ({type(e).__name__}); keeping the messages that check out')
            kept = self.stats.salvaged
            yield from self._damaged_chunk(body)
            self.indexed, self.kept_in_damaged = 0, self.stats.salvaged - kept
            return
        for record in records:
            if isinstance(record, Message):
                yield from self._emit(record)
            elif isinstance(record, Schema):
                self.schemas.setdefault(record.id, record)
            elif isinstance(record, Channel):
                self.channels.setdefault(record.id, record)

    def _damaged_chunk(self, body) -> Iterator:
        """Keep each message record of a damaged or cut chunk that passes the sanity check."""
        if len(body) < _CHUNK_HEAD + 8:
            return
        start, end, _, _, clen = struct.unpack_from('<QQQII', body, 0)
        compression = bytes(body[_CHUNK_HEAD:_CHUNK_HEAD + clen]) if clen <= 4 else b'?'
        if compression in (b'', b'zstd', b'lz4'):
            require_codec(compression.decode())
            data = _decompress(compression.decode(), bytes(body[_CHUNK_HEAD + clen + 8:]))
        else:  # damaged header: the recorder's chunks are uncompressed unless told otherwise
            data = bytes(body[_CHUNK_HEAD:])
        if not (start <= end and end - start < _HOUR_NS):  # the chunk's own time range is damaged
            ref = self.last_time if self.last_time is not None else start
            start, end = ref - _HOUR_NS, ref + _HOUR_NS
        pos = 0
        while pos + 9 <= len(data):
            op, length = _header(data, pos)
            record_end = pos + 9 + length
            if op in (Opcode.SCHEMA, Opcode.CHANNEL) and record_end <= len(data):
                try:
                    for _ in self._record(op, data[pos + 9:record_end]):
                        pass
                    pos = record_end
                    continue
                except Exception:  # noqa: BLE001
                    pass
            elif self._plausible(data, pos, start, end) and self._header_at(data, record_end, start, end):
                yield from self._emit(Message.read(_stream(data[pos + 9:record_end]), length))
                self.stats.salvaged += 1
                pos = record_end
                continue
            pos = self._resync(data, pos + 1, start, end)

    def _plausible(self, data: bytes, pos: int, start: int, end: int) -> bool:
        """A message record starts at ``pos``: known channel, length inside the chunk, log time in range."""
        if pos + 9 + 22 > len(data) or data[pos] != Opcode.MESSAGE:
            return False
        length, channel_id, _, log_time = struct.unpack_from('<QHIQ', data, pos + 1)
        return (22 <= length and pos + 9 + length <= len(data) and channel_id in self.channels
                and start <= log_time <= end)

    def _header_at(self, data: bytes, pos: int, start: int, end: int) -> bool:
        """A record (or the chunk end) follows at ``pos``; a damaged length would land in payload bytes.

        The next record's own length is not checked, so damage there does not cost this message.
        """
        if pos >= len(data) or not data[pos:].strip(b'\0'):
            return True
        if data[pos] in (Opcode.SCHEMA, Opcode.CHANNEL):
            return True
        if pos + 9 + 22 > len(data) or data[pos] != Opcode.MESSAGE:
            return False
        channel_id, _, log_time = struct.unpack_from('<HIQ', data, pos + 9)
        return channel_id in self.channels and start <= log_time <= end

    def _resync(self, data: bytes, pos: int, start: int, end: int) -> int:
        """Offset of the next record that passes the sanity check (len(data) when none)."""
        while True:
            pos = data.find(bytes([Opcode.MESSAGE]), pos)
            if pos < 0:
                return len(data)
            if self._plausible(data, pos, start, end):
                return pos
            pos += 1


def _decompress(compression: str, data: bytes) -> bytes:
    """As much of a chunk's records as decompresses, in bounded output steps: an error loses the output of the step
    that meets the damage (fed 64 kB of input at a time, a zstd chunk of still frames lost all 800 kB of its 200
    messages to 8 damaged bytes in its middle)."""
    if not compression:
        return data
    out = []
    # imported outside the try: a missing package must not read as corrupt data (require_codec said it first)
    if compression == 'zstd':
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    else:
        import lz4.frame
        decoder = lz4.frame.LZ4FrameDecompressor()
    try:
        if compression == 'zstd':
            while piece := reader.read(_OUT_STEP):
                out.append(piece)
        else:
            out.append(decoder.decompress(data, max_length=_OUT_STEP))
            while not (decoder.eof or decoder.needs_input):
                out.append(decoder.decompress(b'', max_length=_OUT_STEP))
    except Exception:  # noqa: BLE001 - corrupt compressed data: keep what came before it
        pass
    return b''.join(out)


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
            op, length = _header(buf, cand)
            if op == Opcode.CHUNK and _CHUNK_HEAD + 8 < length and cand + 9 + length <= size:
                best = cand
                break
            i = j + 1
            if not comp and j - start > 1 << 24:  # uncompressed anchors are common: bound the scan
                break
    return best

