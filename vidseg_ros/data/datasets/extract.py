"""Bags -> all-frame image datasets: ``images/<sequence>/<stamp_ns>.png`` plus ``index.csv``.

Every message of the chosen image topics (raw ``Image`` in any supported encoding, or
``CompressedImage``) becomes one file, in stamp order per topic (``stamp_order``: a frame that arrived a little
late takes its place). Sequences split where the stamps jump by more than ``max_gap_s`` (or go back by more, or
past frames already written) and where the frame size changes (read from the message header, no decoding), so a
sequence is a run of same-size frames; ``index`` is the frame's position in its
sequence *before* ``every`` subsampling, so temporal distances stay true. Files are written to a
temporary name and renamed, so an interrupted run leaves no half files and a re-run skips what
exists. Locally, decoding and encoding run in worker processes and the main process only reads the
bags and plans file names (a frame's size comes from its message header); on a Dask cluster
(``executor='dask'``) each bag is one task (``data.executors``).

The parts: ``extract_config`` (settings, counts), ``image_messages`` (stamp, size, encoding read from a message;
its frame decoded), ``stamp_order`` (frames back in stamp order), ``sequence_names``, ``sequence_planner`` (each
frame's sequence, index and file), ``frame_files`` (a frame's file written in a worker), ``moved_bags`` (a bag the
dataset holds, found at another path by its frames); this module reads the bags, hands frames to the workers and
writes the index.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, as_completed, wait
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidseg_ros.data.bags.reader import IMAGE_TYPES, RawMessage, bag_files, has_suffix, read_messages
# (noqa: F401) names importable from here before the parts were split out: bench_extract.py, tests
from vidseg_ros.data.datasets.extract_config import FORMATS, ExtractConfig, ExtractResult  # noqa: F401
from vidseg_ros.data.datasets.frame_files import write_job
from vidseg_ros.data.datasets.image_messages import (FORMAT_CELL, decode_message, format_cell,  # noqa: F401
                                                     frame_hw, header_stamp_ns, message_encoding)
from vidseg_ros.data.datasets.layouts import (EXTRACTING_NAME, FrameRecord, has_index, read_index, read_meta,
                                              write_index, write_meta)
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.data.datasets.moved_bags import moved_bags
from vidseg_ros.data.datasets.sequence_names import (BAG_SUFFIXES, MAX_SEQUENCE_BYTES, bag_key,  # noqa: F401
                                                     bag_keys, rows_by_bag, sequence_names)
from vidseg_ros.data.datasets.sequence_planner import SequencePlanner
from vidseg_ros.data.executors import check_executor, task_executor
from vidseg_ros.data.images import write_file_atomic
from vidseg_ros.engine.outputs import OUTPUTS
from vidseg_ros.text import clip, short

log = logging.getLogger(__name__)
# segment_node's image outputs (<node>/mask, .../overlay, ...): recorded to review a drive, but class ids and
# renderings are not camera frames, so "every image topic" leaves them out unless --topic names them.
SEGMENTER_OUTPUTS = frozenset(o.name for o in OUTPUTS)


def is_segmenter_output(topic: str) -> bool:
    """True for a topic named like one of segment_node's image outputs (its last name component)."""
    return topic.rstrip('/').rpartition('/')[2] in SEGMENTER_OUTPUTS


def extract(bags: list[str | Path], out: str | Path, cfg: ExtractConfig | None = None,
            progress: Callable[[int], None] | None = None, executor: str = 'local',
            address: str = '') -> ExtractResult:
    """``vidseg extract``: every frame of the image topics of ``bags`` into dataset folder ``out``.

    Args:
        bags: rosbag2 folders, ``.mcap``/``.db3`` files or ROS 1 ``.bag`` files.
        out: dataset folder (created; an existing one is resumed and its labels kept).
        cfg: topics, format, subsampling, gap splitting, workers.
        progress: called with the number of frames finished since the last call.
        executor: ``local`` (frames decoded by ``cfg.workers`` local processes) or ``dask`` (one task
            per bag on a Dask cluster; see ``data.executors``); the files and index are the same.
        address: Dask scheduler address; empty = a local Dask cluster of ``cfg.workers`` processes.
    """
    cfg = cfg or ExtractConfig()
    check_executor(executor, cfg.workers, address)
    for bag in bags:
        check_bag(bag)
    # a Dask task names the folder to the worker, whose current folder is its own: a relative OUT put the frames
    # under the worker's folder (a scheduler at --address), and the driver's index, finding none, lost them
    out = Path(os.path.abspath(out)) if executor == 'dask' else Path(out)
    with dataset_lock(out, create=True):    # two runs at once: the one ending last dropped the other's rows
        return _extract_locked(bags, out, cfg, progress, executor, address)


def _extract_locked(bags: list[str | Path], out: Path, cfg: ExtractConfig, progress, executor: str,
                    address: str) -> ExtractResult:
    """``extract`` once ``out`` is locked."""
    (out / 'images').mkdir(exist_ok=True)
    result = ExtractResult()
    marker = out / EXTRACTING_NAME
    if marker.exists():
        log.info('%s: completing an extract that did not finish', short(out))
    old = {r.image: r for r in read_index(out, warn_incomplete=False)} if has_index(out) else {}
    write_file_atomic(marker, ('\n'.join(str(b) for b in bags) + '\n').encode(errors='surrogateescape'))
    # absolute: the index's bag column is how a later run, from any folder, knows a bag is already in
    paths = [Path(os.path.abspath(b)) for b in bags]
    old = _moved_to(old, moved_bags(paths, old.values(), cfg))
    rows: dict[Path, FrameRecord] = dict(old)
    named = list(zip(paths, sequence_names(paths, old.values())))
    t_start = time.perf_counter()
    try:
        # local: one task per frame; dask: one per bag
        with task_executor(executor, cfg.workers, address, tasks=len(named) if executor == 'dask' else None) as pool:
            if executor == 'local':
                pending: dict = {}
                by_bag = rows_by_bag(old.values())
                for bag, name in named:
                    _extract_bag(bag, name, out, cfg, rows, result, pool, pending, progress,
                                 by_bag.get(bag_key(bag), []))
                while pending:
                    _drain(pending, result, rows, progress, FIRST_COMPLETED)
            else:
                _extract_on_cluster(pool, named, out, cfg, old, rows, result, progress)
    finally:
        records = [r for r in rows.values() if Path(r.image).is_file()]
        # Frames on disk that no row knows of yet: a Dask task returns its bag's rows at its end, so a run stopped
        # inside its first bag left frames with neither index nor marker, a folder that looked finished. Indexed
        # and marked unfinished as the local run is; the re-run indexes them (they exist, so it skips them).
        if records or old or _any_file(out / 'images'):
            write_index(out, records)
            _update_fps(out, records)
        else:   # no frame written: leave no empty dataset that later commands would take for one
            marker.unlink(missing_ok=True)
            try:
                (out / 'images').rmdir()      # only if empty; the lock removes a new output folder left empty
            except OSError:
                pass
    # every bag read to its end: the index is whole (not reached on Ctrl-C, a kill or a failure)
    marker.unlink(missing_ok=True)
    if not result.selected:     # nothing to extract in any bag: an error, saying why for each bag
        raise ValueError('; '.join(result.empty_bags))
    if result.failed and not result.frames:     # every frame undecodable (an H.264 or GIF stream): exit 0 with
        raise ValueError(f'no frame extracted: all {result.failed} frame(s) failed to decode; the first: '   # none
                         f'{result.first_failure}')
    for text in result.empty_bags:
        log.warning('%s', text[:1000])     # topic names come from the bag
    for r in rows.values():
        result.sequences[r.sequence] = result.sequences.get(r.sequence, 0) + 1
    result.skipped_topics.sort()
    result.seconds = time.perf_counter() - t_start
    if result.failed or result.warnings:
        log.warning('extract: %d frame(s) failed to decode, %d bag warning(s)', result.failed,
                    len(result.warnings))
    return result


def _any_file(folder: Path) -> bool:
    """Whether a file (a frame, or one being written) is anywhere under ``folder``."""
    return any(not p.is_dir() for p in folder.rglob('*')) if folder.is_dir() else False


def check_bag(bag: str | Path) -> None:
    """Refuse what is not a bag (a video, an image folder) before any work is done."""
    for file in bag_files(bag):
        if not has_suffix(file, BAG_SUFFIXES):
            raise ValueError(f'{bag} is not a bag: expected a rosbag2 folder, .mcap, .db3 (or .mcap.zstd, .db3.zstd) '
                             'or a ROS 1 .bag (or .bag.active) (for a video or image folder use '
                             '`vidseg bag-from-frames`)')


def _moved_to(old: dict[Path, FrameRecord], moved: dict[str, Path]) -> dict[Path, FrameRecord]:
    """The dataset's rows, those of a bag found at another path (``moved_bags``) naming that path: the bag then keeps
    its sequence names and its frames are skipped as existing, and a later run knows it without reading it again."""
    if not moved:
        return old
    keys = bag_keys(old.values())
    return {image: replace(r, bag=str(moved[keys[r.bag]])) if r.bag and keys[r.bag] in moved else r
            for image, r in old.items()}


def _extract_bag(bag: Path, name: str, out: Path, cfg: ExtractConfig, rows: dict, result: ExtractResult, pool,
                 pending: dict, progress, mine: list[FrameRecord]) -> None:
    """Plan and write every frame of one bag (``mine``: its rows already in the dataset); with a ``pool``,
    decoding runs in its processes."""
    found: dict[str, str] = {}     # every topic of the bag, for the message when it has no image
    planner = SequencePlanner(cfg, bag, name, out, result, found, mine)
    seen, selected = 0, result.selected

    def write(planned) -> None:
        for rec, path, frame, recorded in planned:
            _write_frame(frame, recorded, rec, path, cfg, rows, result, pool, pending, progress)
    try:
        for msg in _camera_messages(bag, cfg, result, found):
            seen += 1
            result.image_messages += 1
            write(planner.plan(msg))
    except Exception:       # a reader failure: the frames read before it are written, as they were without holding
        write(planner.flush())
        raise
    write(planner.flush())
    if not seen:
        _empty_bag(result, _no_images(bag, cfg.topics, found))
    elif result.selected == selected:
        _empty_bag(result, f'{bag}: no frame from {cfg.start_s:g} s' +
                   (f' to {cfg.stop_s:g} s' if cfg.stop_s else '') +
                   f' after the first (--start-s/--stop-s); its image topics span {planner.span_s:.2f} s')


def _camera_messages(bag: Path, cfg: ExtractConfig, result: ExtractResult, found: dict[str, str]):
    """The bag's image messages to extract: of ``cfg.topics``, or every image topic but segment_node's outputs."""
    for msg in read_messages(bag, cfg.topics or None, warnings=result.warnings, found=found):
        if msg.msgtype not in IMAGE_TYPES:
            continue
        if not cfg.topics and is_segmenter_output(msg.topic):
            if msg.topic not in result.skipped_topics:
                result.skipped_topics.append(msg.topic)
                log.info('extract: %s looks like a segment_node output, not a camera: left out '
                         '(--topic %s extracts it)', msg.topic[:200], msg.topic[:200])
            continue
        yield msg


def _write_frame(msg: RawMessage, recorded, rec: FrameRecord, path: Path, cfg: ExtractConfig, rows: dict,
                 result: ExtractResult, pool, pending: dict, progress) -> None:
    """Write one planned frame (or skip it where its file exists); with a ``pool``, in its processes.
    ``recorded``: the message deserialised where its bytes are kept as recorded (``kept_as_recorded``)."""
    if path.is_file() and path.stat().st_size > 0:
        result.skipped_existing += 1
        if path not in rows:   # written by a run that died before its index: index it as it would have
            rows[path] = replace(rec, encoding=message_encoding(msg))
        if progress:
            progress(1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    job = (msg, str(path), cfg.jpeg_quality)
    # Stored-as-recorded bytes need no decoding: shipping them to a worker costs more.
    if pool is None or recorded is not None:
        _collect(result, rows, rec, path, write_job(job, recorded), progress)
        return
    pending[pool.submit(write_job, job)] = (rec, path)
    # Bounded window: never hold more than a few frames per worker in memory.
    while len(pending) >= 4 * cfg.workers:
        _drain(pending, result, rows, progress, FIRST_COMPLETED)


def _empty_bag(result: ExtractResult, text: str) -> None:
    """A bag that gave no frame: logged at the end, once, as a warning (or the error when no bag gave any)."""
    result.empty_bags.append(text)
    result.warnings.append(text)


def _bag_task(bag: str, name: str, out: str, cfg: ExtractConfig, old_rows: dict) -> tuple[dict, ExtractResult]:
    """One bag as a cluster task: its frames written, its index rows and counts returned."""
    rows, result = dict(old_rows), ExtractResult()
    _extract_bag(Path(bag), name, Path(out), cfg, rows, result, None, {}, None, list(old_rows.values()))
    return rows, result


def _extract_on_cluster(pool, bags: list[tuple[Path, str]], out: Path, cfg: ExtractConfig, old: dict, rows: dict,
                        result: ExtractResult, progress) -> None:
    """One task per (bag, sequence name); each bag's rows are merged as it finishes (bags never share a
    file), so a bag that fails, or a stop, leaves the finished ones indexed."""
    # each bag's rows, found once (not bags x rows), by the bag's real path as the local run finds them: by the path
    # as given, a bag named through a link in one run and by its real path in the next got no rows, and its frames'
    # human labels dropped out of the index (kept by the local run)
    by_bag = {key: {r.image: r for r in recs} for key, recs in rows_by_bag(old.values()).items()}
    futures = [pool.submit(_bag_task, str(bag), name, str(out), cfg, by_bag.get(bag_key(bag), {}))
               for bag, name in bags]
    merged = set()

    def merge(fut) -> None:
        merged.add(fut)
        bag_rows, bag_result = fut.result()
        rows.update(bag_rows)
        result.add(bag_result)
        if progress:
            progress(bag_result.frames + bag_result.failed)
    try:
        for fut in as_completed(futures):
            merge(fut)
    finally:    # stopped (Ctrl-C, SIGTERM) or a bag failed: the bags that finished meanwhile are indexed too
        for fut in futures:
            if fut not in merged and fut.done() and not fut.cancelled() and fut.exception() is None:
                merge(fut)


def _no_images(bag: Path, topics: list[str], found: dict[str, str]) -> str:
    """Why ``bag`` gave no image, from the topics its read ``found`` (the bag is not read again)."""
    images = sorted(t for t, ty in found.items() if ty in IMAGE_TYPES)
    text = (f'{bag}: no image messages' + (f' on {", ".join(topics)}' if topics else '') +
            f'; image topics in this bag: {", ".join(images) or "none"}')
    outputs = [t for t in images if is_segmenter_output(t)]
    if outputs and not topics:
        text += f' ({", ".join(outputs)}: segment_node outputs, left out unless named with --topic)'
    return text


def _drain(pending: dict, result, rows, progress, how) -> None:
    done, _ = wait(list(pending), return_when=how)
    for fut in done:
        rec, path = pending.pop(fut)
        _collect(result, rows, rec, path, fut.result(), progress)


def _collect(result: ExtractResult, rows: dict, rec: FrameRecord, path: Path, outcome, progress) -> None:
    nbytes, encoding, error, oriented = outcome
    if oriented:
        _count_oriented(result, rec, oriented)
    if error:
        result.failed += 1
        if result.failed == 1:
            result.first_failure = clip(f'{rec.bag} {rec.topic} @ {rec.stamp_ns}: {error}', 300)
        if result.failed <= 10:
            result.warnings.append(f'{rec.bag} {rec.topic} @ {rec.stamp_ns}: {error}')
            log.warning('frame %s of %s not extracted: %s', rec.stamp_ns, rec.bag, error)
    else:
        result.written += 1
        result.bytes_written += nbytes
        old = rows.get(path)
        rows[path] = FrameRecord(rec.sequence, rec.index, path, old.label if old else None, rec.stamp_ns,
                                 old.label_source if old else 'none', rec.bag, rec.topic, encoding)
    if progress:
        progress(1)


def _count_oriented(result: ExtractResult, rec: FrameRecord, oriented: str) -> None:
    """Count a kept frame whose EXIF orientation was reset (``'reset'``) or that was encoded again for it."""
    if oriented == 'reset':
        result.exif_reset += 1
        if result.exif_reset == 1:
            log.info('extract: %s carries an EXIF orientation: set to 1 in the kept files (the node ignores it, '
                     'file readers would turn the frame); no pixel re-encoded', rec.topic[:200])
        return
    result.exif_reencoded += 1
    if result.exif_reencoded <= 10:
        text = (f'{rec.bag} {rec.topic} @ {rec.stamp_ns}: an EXIF orientation this cannot reset in place: the '
                'frame was encoded again as stored (as the node sees it), not kept byte for byte')
        result.warnings.append(text)
        log.warning('%s', text[:1000])


def _update_fps(out: Path, records: list[FrameRecord]) -> None:
    """``fps`` in dataset.yaml, estimated from the stamps when missing or unusable (a run that found no
    frame used to leave 0.0 there, and a later run kept it); a valid value (maybe set by hand) is kept."""
    meta = read_meta(out)
    fps = meta.get('fps')
    if isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0:
        return
    fps = _estimate_fps(records)
    if fps:
        write_meta(out, {**meta, 'fps': fps})


def _estimate_fps(records: list[FrameRecord]) -> float:
    stamps = sorted((r.sequence, r.stamp_ns, r.index) for r in records)
    dts = [(b[1] - a[1]) / (b[2] - a[2]) for a, b in zip(stamps, stamps[1:])
           if a[0] == b[0] and b[2] > a[2]]
    return round(1e9 / float(np.median(dts)), 3) if dts else 0.0
