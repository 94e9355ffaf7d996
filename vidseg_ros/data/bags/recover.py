"""Recover a recorder bag left without summary (SIGKILL, power loss, full disk) or with damaged chunks.

Only MCAP bags are touched, and never in place: the recovered bag is a new directory (``--out``, or
``<bag>_recovered`` next to the original), so recovery also works when the bag's own disk is full.
Intact files are hard-linked there (copied across file systems); each incomplete or damaged
(chunk CRC) file is rewritten from every record that still checks out (:mod:`vidseg_ros.data.bags.salvage`: whole
chunks, then single messages of damaged chunks); ``metadata.yaml`` is written for the result.

Refused with :class:`RecoveryRefused` (one line, exit code 2 on the command line), touching nothing:
anything that is not an MCAP file or a folder of them (sqlite3 bags included: rosbag2's sqlite
storage has its own ``ros2 bag reindex``), an existing non-empty ``--out``, and a file modified in
the last 5 s (a recording still in progress) unless ``--force``. A bag whose chunks are compressed
with a codec whose package is missing (zstandard, lz4) is refused the same way
(:class:`~vidseg_ros.data.bags.salvage.MissingCodec`): its chunks would read as damaged, and the copy
would lose every message of them.

Command line::

    vidseg bag-recover BAG_DIR_OR_MCAP [--out DIR] [--force]
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from mcap.exceptions import EndOfFile, McapError, UnsupportedCompressionError
from mcap.reader import make_reader
from mcap.records import Channel, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from vidseg_ros.data.bags.reader import listed_names, recorded_nothing
from vidseg_ros.data.bags.writer import mcap_files, write_metadata
from vidseg_ros.files import file_problem, open_regular, real_path
from vidseg_ros.text import one_line, printable
from vidseg_ros.data.bags.salvage import (MCAP_MAGIC, MissingCodec, SalvageStats, chunk_compressions, require_codec,
                                          salvage_records)

log = logging.getLogger(__name__)

MAX_LINE = 400  # characters of an error line (as the other commands' one handler shows them)
_LIVE_S = 5.0  # a recording file is written at least every second (chunk age): newer means live
_SQLITE_MAGIC = b'SQLite format 3\0'


class RecoveryRefused(ValueError):
    """The input is not something this tool recovers (or is still being recorded); nothing was touched."""


@dataclasses.dataclass
class RecoveryReport:
    """What :func:`recover_bag` did.

    Attributes:
        source: the bag directory (or file) recovered from; left untouched.
        out: the recovered bag directory (None: every file was complete, nothing written).
        repaired: names of the files that were rewritten.
        messages: messages kept per rewritten file.
        salvaged: of those, messages kept one by one from damaged or cut chunks.
        skipped: messages of damaged chunks that could not be kept (per the chunks' message indexes).
        metadata_path: the ``metadata.yaml`` written.
        unlisted: names of the files the bag's own metadata.yaml did not list (every one where it had none usable).
    """

    source: Path
    out: Path | None
    repaired: list[str] = dataclasses.field(default_factory=list)
    messages: dict[str, int] = dataclasses.field(default_factory=dict)
    salvaged: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    metadata_path: Path | None = None
    empty: bool = False
    unlisted: list[str] = dataclasses.field(default_factory=list)


def is_complete(path: str | Path) -> bool:
    """True when an MCAP file ends with a valid footer and summary (closed properly)."""
    try:
        with open(path, 'rb') as f:
            return make_reader(f).get_summary() is not None
    except (McapError, EndOfFile, ValueError, OSError, IndexError):
        return False
    except Exception:  # noqa: BLE001 - the readers raise struct.error & co. on garbage
        return False


def is_intact(path: str | Path) -> bool:
    """True when an MCAP file is complete and every chunk passes its CRC (reads the whole file).

    Raises:
        MissingCodec: a chunk's compression package is not installed (the file cannot be checked).
    """
    if not is_complete(path):
        return False
    try:
        with open(path, 'rb') as f:
            for _ in StreamReader(f, validate_crcs=True).records:
                pass
        return True
    except UnsupportedCompressionError as e:   # mcap's reader lacks a package ('... type zstandard'): not damage
        raise MissingCodec('lz4' if str(e).endswith('lz4') else 'zstd') from None
    except Exception:  # noqa: BLE001 - CRC mismatch, corrupt compressed data, torn records
        return False


def _magic(path: Path) -> bytes:
    with open_regular(path) as f:
        return f.read(len(_SQLITE_MAGIC))


def bag_sources(path: str | Path) -> tuple[Path, list[Path]]:
    """(bag directory, its MCAP files) after checking that this is an MCAP bag; else RecoveryRefused."""
    path = Path(path).absolute()  # `.` or a bare file name: the output goes next to a named folder
    if path.is_dir():
        if list(path.glob('*.db3')):
            raise RecoveryRefused(f'{path} is a sqlite3 bag; only MCAP bags are recovered here '
                                  f'(sqlite3: use `ros2 bag reindex`)')
        files = mcap_files(path)
        if not files and not recorded_nothing(path):
            raise RecoveryRefused(f'{path} holds no .mcap file: not a bag')
        bag_dir = path
    elif path.is_file():
        files, bag_dir = [path], path.parent
    elif (problem := file_problem(path)) != 'is missing':
        raise RecoveryRefused(f'{path} {problem}: not a bag')
    else:
        raise RecoveryRefused(f'no bag at {path}')
    for f in files:
        if problem := file_problem(f):      # a FIFO named *.mcap in the folder blocked the recovery for good
            raise RecoveryRefused(f'{f} {problem}, not an MCAP file; nothing touched')
        head = _magic(f)
        if head.startswith(_SQLITE_MAGIC):
            raise RecoveryRefused(f'{f} is a sqlite3 database; only MCAP bags are recovered here')
        if not head.startswith(MCAP_MAGIC):
            raise RecoveryRefused(f'{f} is not an MCAP file (no MCAP magic); nothing touched')
    return bag_dir, files


def _out_dir(bag_dir: Path, out: str | Path | None) -> Path:
    if out is not None:
        out = Path(out)
        if real_path(out) == real_path(bag_dir):       # resolve() raised RuntimeError at a link loop
            raise RecoveryRefused(f'--out {out} is the bag itself; originals are never overwritten')
        if os.path.lexists(out) and (not out.is_dir() or any(out.iterdir())):   # a dangling link, a loop too
            raise RecoveryRefused(f'--out {out} exists and is not an empty folder')
        return out
    out, n = bag_dir.with_name(f'{bag_dir.name}_recovered'), 0
    while out.exists():
        n += 1
        out = bag_dir.with_name(f'{bag_dir.name}_recovered_{n}')
    return out


def _rewrite(src: Path, dst: Path) -> SalvageStats:
    """Write every record of ``src`` that checks out into a new complete MCAP ``dst``."""
    stats = SalvageStats()
    with open(dst, 'xb') as out:
        writer = Writer(out, compression=CompressionType.NONE)
        writer.start(profile='ros2', library='vidseg_ros bag_recover')
        schemas: dict[int, int] = {0: 0}
        channels: dict[int, int] = {}
        for record in salvage_records(src, stats):
            if isinstance(record, Schema):
                schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel):
                channels[record.id] = writer.register_channel(
                    record.topic, record.message_encoding, schemas.get(record.schema_id, 0), dict(record.metadata))
            else:
                writer.add_message(channels[record.channel_id], log_time=record.log_time, data=record.data,
                                   publish_time=record.publish_time, sequence=record.sequence)
        writer.finish()
        out.flush()
        os.fsync(out.fileno())
    return stats


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def recover_bag(path: str | Path, out: str | Path | None = None, force: bool = False) -> RecoveryReport:
    """Write a readable copy of a recorder bag into a new directory; the original is never modified.

    Args:
        path: bag directory, or one ``.mcap`` file.
        out: directory to create for the recovered bag (default ``<bag>_recovered`` next to it).
            Point it at another disk when the bag's disk is full.
        force: also recover files modified in the last few seconds (by default they are taken
            for a recording still in progress and the recovery refuses).

    Raises:
        RecoveryRefused: not an MCAP bag, a live recording, or an unusable ``out``.
        MissingCodec: the bag's chunks need a compression package that is not installed.
        OSError: writing the recovered bag failed (what was written of it is removed).
    """
    bag_dir, files = bag_sources(path)
    for f in files:     # before anything is written: without its codec a chunk would read as damaged
        for compression in sorted(chunk_compressions(f)):
            require_codec(compression)
    if not files:   # an older recorder stopped before its first message: metadata.yaml alone, listing nothing
        return RecoveryReport(source=bag_dir, out=None, empty=True)
    broken = [f for f in files if not is_intact(f)]
    # a recorder killed while it closed leaves every file complete and a metadata.yaml that lists the last splits
    # not yet (or none, or one a power loss cut): 'nothing to do', and rosbag2 played the bag without them
    listed = listed_names(bag_dir) if Path(path).is_dir() else None
    if not broken and listed is not None and all(f.name in listed for f in files):
        return RecoveryReport(source=bag_dir, out=None)  # nothing to recover
    if not force:
        for f in broken:
            age = time.time() - f.stat().st_mtime
            if age < _LIVE_S:
                raise RecoveryRefused(f'{f} was written {age:.1f} s ago: is it still being recorded? Stop the '
                                      f'recorder first (or pass --force)')
    out_dir = _out_dir(bag_dir, out)
    report = RecoveryReport(source=Path(path), out=out_dir,
                            unlisted=[f.name for f in files if listed is None or f.name not in listed])
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for src in files:
            dst = out_dir / src.name
            if src not in broken:
                _link_or_copy(src, dst)
                continue
            stats = _rewrite(src, dst)
            report.repaired.append(src.name)
            report.messages[src.name] = stats.messages
            report.salvaged[src.name] = stats.salvaged
            report.skipped[src.name] = stats.skipped
            for text in stats.warnings:
                log.info('%s', text)
            log.warning('recovered %s: %d messages kept (%d from damaged or cut chunks), %d skipped',
                        src.name, stats.messages, stats.salvaged, stats.skipped)
        report.metadata_path = write_metadata(out_dir, [out_dir / f.name for f in files])
    except BaseException:
        for f in files:  # only what this call created
            (out_dir / f.name).unlink(missing_ok=True)
        for name in ('metadata.yaml', 'metadata.yaml.tmp'):
            (out_dir / name).unlink(missing_ok=True)
        if created:
            out_dir.rmdir()
        raise
    return report


def _write_failed(e: OSError, bag, out) -> str:
    """Why the recovered bag could not be written, and what to do: the cause decides (a read-only disk was
    told to free space). What was written of it is removed already; the bag itself is never changed."""
    where = f'--out {out}' if out is not None else str(bag)
    other = 'pass another --out DIR' if out is not None else 'pass --out DIR'
    if e.errno == errno.EROFS:
        return f'{where} is on a read-only file system: {other} on a writable disk'
    if e.errno in (errno.EACCES, errno.EPERM):
        return f'{e.filename or where}: permission denied: {other} where you may write'
    reason = f'writing the recovered bag failed ({e.strerror or e}); nothing was changed in {bag}'
    if e.errno == errno.EFBIG:   # not a full disk: 'a disk with free space' sent users to one as limited
        return (f'{reason}; a file would pass the largest file this process or file system may write (ulimit -f; '
                f'FAT32 takes 4 GB at most): raise the limit, or {other} on a disk that takes files that large')
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f'{reason}; {other} on a disk with free space'
    return f'{reason} (at {e.filename})' if e.filename else reason


def run(bag, out=None, force: bool = False) -> int:
    """Recover and print the report; errors become one stderr line and an exit code."""
    try:
        report = recover_bag(bag, out, force)
    except (RecoveryRefused, MissingCodec) as e:
        print(f'vidseg bag-recover: error: {one_line(e, MAX_LINE)}', file=sys.stderr)
        return 2
    except OSError as e:
        print(f'vidseg bag-recover: error: {one_line(_write_failed(e, bag, out), MAX_LINE)}', file=sys.stderr)
        return 2
    # file and folder names may come from someone else's archive: escaped (a path is at most 4 kB, kept whole)
    for name in report.repaired:
        print(f'{printable(name)}: {report.messages[name]} messages recovered ({report.salvaged[name]} from damaged or '
              f'cut chunks, {report.skipped[name]} skipped)')
    if report.unlisted and not report.repaired:     # every file complete: say why a bag was written
        print(f'{printable(bag)}: every file is complete, but its metadata.yaml did not list {len(report.unlisted)} of '
              f'them (a recorder killed while it closed?): the recovered bag lists them all')
    if report.empty:
        print(f'{printable(bag)}: recorded nothing (its metadata.yaml lists no file and no message); nothing to do')
    else:
        print(f'recovered bag: {printable(report.out)}' if report.out
              else f'{printable(bag)}: every file is complete; nothing to do')
    return 0
