"""Recover a bag whose recorder was killed (SIGKILL, power loss) before it closed its last file.

Such a file has a header and complete chunks, then maybe a partial chunk, and no summary. Recovery
reads it sequentially, keeps every record up to the last chunk whose length and CRC check out,
rewrites those records as a complete MCAP file (summary, indexes, statistics) and writes a fresh
``metadata.yaml`` for the whole bag. The original is kept as ``<file>.truncated`` unless told not to.

Command line::

    python -m vidseg_ros.data.bag_recover BAG_DIR_OR_MCAP [--delete-original] [--force]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from pathlib import Path

from mcap.exceptions import EndOfFile, McapError
from mcap.reader import make_reader
from mcap.records import Channel, Footer, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from vidseg_ros.data.bag_writer import bag_files, write_metadata

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RecoveryReport:
    """What :func:`recover_bag` did.

    Attributes:
        bag_dir: the bag directory.
        repaired: files that were truncated and have been rewritten.
        messages: messages kept per repaired file.
        bytes_lost: bytes of partial records dropped from the end of each repaired file.
        metadata_path: the ``metadata.yaml`` written.
    """

    bag_dir: Path
    repaired: list[Path] = dataclasses.field(default_factory=list)
    messages: dict[str, int] = dataclasses.field(default_factory=dict)
    bytes_lost: dict[str, int] = dataclasses.field(default_factory=dict)
    metadata_path: Path | None = None


class _StrictReader:
    """File reader that treats a short read as the end of the file (a partial last record)."""

    def __init__(self, f):
        self._f = f
        self.good = 0  # offset after the last record accepted by the caller

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) < n:
            raise EndOfFile()
        return data

    def tell(self) -> int:
        return self._f.tell()


def is_complete(path: str | Path) -> bool:
    """True when an MCAP file ends with a valid footer and summary (closed properly)."""
    try:
        with open(path, 'rb') as f:
            return make_reader(f).get_summary() is not None
    except (McapError, EndOfFile, ValueError, OSError, IndexError):
        return False
    except Exception:  # noqa: BLE001 - the readers raise struct.error & co. on garbage
        return False


def _rewrite(src: Path, dst: Path) -> tuple[int, int]:
    """Copy every intact record of ``src`` into a new complete MCAP ``dst``; returns (messages, bytes lost)."""
    size = src.stat().st_size
    count = 0
    with open(src, 'rb') as f, open(dst, 'xb') as out:
        reader = _StrictReader(f)
        writer = Writer(out, compression=CompressionType.NONE)
        writer.start(profile='ros2', library='vidseg_ros bag_recover')
        schemas: dict[int, int] = {0: 0}
        channels: dict[int, int] = {}
        good = 0
        try:
            # validate_crcs: a chunk with garbage (power loss) fails its CRC and ends the recovery.
            for record in StreamReader(reader, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
                elif isinstance(record, Channel):
                    channels[record.id] = writer.register_channel(
                        record.topic, record.message_encoding, schemas.get(record.schema_id, 0),
                        dict(record.metadata))
                elif isinstance(record, Message):
                    writer.add_message(channels[record.channel_id], log_time=record.log_time,
                                       data=record.data, publish_time=record.publish_time,
                                       sequence=record.sequence)
                    count += 1
                elif isinstance(record, Footer):
                    good = size
                    break
                good = reader.tell()
        except (McapError, EndOfFile, KeyError, ValueError) as e:
            log.info('%s: stopped at byte %d of %d (%s)', src, good, size, type(e).__name__)
        except Exception as e:  # noqa: BLE001 - struct.error etc. from a torn record
            log.info('%s: stopped at byte %d of %d (%r)', src, good, size, e)
        writer.finish()
        out.flush()
        os.fsync(out.fileno())
    return count, max(0, size - good)


_LIVE_S = 5.0  # a recording file is written at least every second (chunk age): newer means live


def recover_bag(path: str | Path, keep_original: bool = True, force: bool = False) -> RecoveryReport:
    """Make a bag readable again after its recorder died: rewrite truncated files, rewrite metadata.

    Args:
        path: bag directory, or one ``.mcap`` file inside it.
        keep_original: keep each truncated file as ``<name>.truncated`` (else delete it).
        force: also rewrite files modified in the last few seconds (by default they are taken
            for a recording still in progress and the recovery refuses).

    Returns:
        A :class:`RecoveryReport`. Complete files are left untouched.
    """
    path = Path(path)
    bag_dir = path.parent if path.is_file() else path
    if not bag_dir.is_dir():
        raise FileNotFoundError(f'no bag at {path}')
    report = RecoveryReport(bag_dir=bag_dir)
    targets = [path] if path.is_file() else bag_files(bag_dir)
    for src in targets:
        if is_complete(src):
            continue
        if not force and time.time() - src.stat().st_mtime < _LIVE_S:
            raise RuntimeError(f'{src} was written {time.time() - src.stat().st_mtime:.1f} s ago: is it still '
                               f'being recorded? Stop the recorder first (or force the recovery).')
        tmp = src.with_name(src.name + '.recovering')
        tmp.unlink(missing_ok=True)
        count, lost = _rewrite(src, tmp)
        if keep_original:
            os.replace(src, src.with_name(src.name + '.truncated'))
        os.replace(tmp, src)
        report.repaired.append(src)
        report.messages[src.name] = count
        report.bytes_lost[src.name] = lost
        log.warning('recovered %s: %d messages kept, %d trailing bytes dropped', src, count, lost)
    report.metadata_path = write_metadata(bag_dir, [p for p in bag_files(bag_dir) if is_complete(p)])
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python -m vidseg_ros.data.bag_recover BAG [--delete-original] [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('bag', help='bag directory or .mcap file')
    parser.add_argument('--delete-original', action='store_true',
                        help='delete truncated originals instead of keeping them as *.truncated')
    parser.add_argument('--force', action='store_true', help='recover files written in the last seconds too')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    report = recover_bag(args.bag, keep_original=not args.delete_original, force=args.force)
    for name, count in report.messages.items():
        logging.info('%s: %d messages recovered, %d bytes lost', name, count, report.bytes_lost[name])
    if not report.repaired:
        logging.info('no truncated file in %s; metadata rewritten', report.bag_dir)
    logging.info('metadata: %s', report.metadata_path)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
