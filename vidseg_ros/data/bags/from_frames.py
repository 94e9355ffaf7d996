"""Image folders and videos -> rosbag2 bags (Image or CompressedImage + CameraInfo), without ROS.

The inverse of :mod:`vidseg_ros.data.datasets.extract`: turns datasets such as CamVid or DAVIS into drives
that ``ros2 bag play``, the segment node and ``vidseg extract`` consume. Written with the
``rosbags`` Writer (MCAP by default, sqlite3 on request). Several sequences go into one bag with a
time gap between them so that extraction splits them again.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore

from vidseg_ros.config import setting
from vidseg_ros.data.images import (SHORT_TEXT, ImageError, array_to_image_fields, clip, encode_compressed,
                                    from_rgb8, pinhole_intrinsics)
from vidseg_ros.data.order import natural_key
from vidseg_ros.files import name_limit
from vidseg_ros.data.video import VideoFrames as VideoSource, read_frame

log = logging.getLogger(__name__)
IMAGE_T = 'sensor_msgs/msg/Image'
COMPRESSED_T = 'sensor_msgs/msg/CompressedImage'
INFO_T = 'sensor_msgs/msg/CameraInfo'
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
_SEQ_NAME = re.compile(r'^(?P<seq>.+)_f?\d+$')
_STAMP_END_NS = 2**31 * 10**9


@dataclass
class BagFromFramesConfig:
    """How ``vidseg bag-from-frames`` writes its bag."""

    rate_hz: float = setting(15.0, 'Frame rate of the written stream (stamps = start + i / rate)')
    topic: str = setting('/camera/image_raw', 'Image topic; CompressedImage goes to <topic>/compressed')
    encoding: str = setting('rgb8', 'Raw Image encoding (rgb8, bgr8, mono8, ...) or jpeg / png for '
                                    'CompressedImage')
    jpeg_quality: int = setting(95, 'JPEG quality when encoding is jpeg')
    frame_id: str = setting('camera', 'header.frame_id of every message')
    camera_info: bool = setting(True, 'Also write sensor_msgs/CameraInfo on <topic parent>/camera_info')
    storage: str = setting('mcap', 'Bag storage plugin', ('mcap', 'sqlite3'))
    compress: bool = setting(False, 'zstd chunk/storage compression (smaller, slower)')
    start_ns: int = setting(1_700_000_000_000_000_000, 'Stamp of the first frame')
    gap_s: float = setting(2.0, 'Time gap inserted between sequences (extract splits at gaps)')


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = 'rgb8',
              quality: int = 95):
    """(H, W, 3) RGB -> (msgtype, rosbags message) for a raw or compressed image."""
    header = _header(stamp_ns, frame_id)
    if encoding in ('jpeg', 'png'):
        fmt, data = encode_compressed(rgb, encoding, quality)
        return COMPRESSED_T, TYPESTORE.types[COMPRESSED_T](
            header=header, format=fmt, data=np.frombuffer(data, np.uint8))
    arr = from_rgb8(rgb, encoding)
    f = array_to_image_fields(arr, encoding)
    return IMAGE_T, TYPESTORE.types[IMAGE_T](
        header=header, height=f['height'], width=f['width'], encoding=f['encoding'],
        is_bigendian=f['is_bigendian'], step=f['step'], data=np.frombuffer(f['data'], np.uint8))


def camera_info_msg(height: int, width: int, stamp_ns: int, frame_id: str):
    """A pinhole CameraInfo with a guessed focal length (60 deg horizontal field of view)."""
    k, p = pinhole_intrinsics(width, height)
    roi = TYPESTORE.types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return TYPESTORE.types[INFO_T](
        header=_header(stamp_ns, frame_id), height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5), k=np.array(k), r=np.eye(3).flatten(), p=np.array(p), binning_x=0, binning_y=0, roi=roi)


def _header(stamp_ns: int, frame_id: str):
    time = TYPESTORE.types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                          nanosec=stamp_ns % 10**9)
    return TYPESTORE.types['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)


def write_bag(out: str | Path, sequences: Iterable[Iterable[np.ndarray]],
              cfg: BagFromFramesConfig | None = None,
              progress: Callable[[int], None] | None = None) -> dict:
    """Write sequences of RGB frames as one bag; returns counts and the stamps written.

    All or nothing: on any error (an unreadable frame, a full disk, Ctrl-C) the bag folder, and the parent
    folders this call made, are removed before the error goes on, so a re-run needs no clean-up.

    Args:
        out: bag folder to create (must not exist, rosbag2 convention).
        sequences: each an iterable of (H, W, 3) uint8 RGB frames.
        cfg: rate, topic, encoding, storage.
        progress: called with 1 after every written frame.
    """
    cfg = cfg or BagFromFramesConfig()
    if not 0 < cfg.rate_hz <= 1e9:     # inf: every frame at one stamp; over 1e9: a period under a nanosecond
        raise ValueError(f'rate_hz must be > 0 and at most 1e9 (one frame a nanosecond), got {cfg.rate_hz}')
    out = Path(out)
    _check_new_bag(out, cfg.storage)
    new = [p for p in (out, *out.parents) if not p.exists()]     # the folders this call makes, deepest first
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP if cfg.storage == 'mcap'
                    else StoragePlugin.SQLITE3)
    if cfg.compress:
        writer.set_compression(CompressionMode.STORAGE if cfg.storage == 'mcap'
                               else CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    try:
        writer.open()
    except WriterError:      # made by another run since the check: not ours to remove
        raise FileExistsError(_exists(out)) from None
    except BaseException as e:
        raise _undo(e, new, out)
    try:
        summary = _write_frames(writer, sequences, cfg, progress)
        writer.close()
    except BaseException as e:
        with contextlib.suppress(Exception):
            writer.abort()
        raise _undo(e, new, out)
    log.info('wrote %d frames in %d sequence(s) to %s', summary['frames'], len(summary['stamps']), out)
    return {'bag': str(out), **summary}


def _write_frames(writer: Writer, sequences: Iterable[Iterable[np.ndarray]], cfg: BagFromFramesConfig,
                  progress: Callable[[int], None] | None) -> dict:
    """Every frame (and its CameraInfo) into the open ``writer`` -> topic, frame count, stamps."""
    compressed = cfg.encoding in ('jpeg', 'png')
    topic = cfg.topic.rstrip('/') + ('/compressed' if compressed else '')
    info_topic = cfg.topic.rstrip('/').rsplit('/', 1)[0] + '/camera_info'
    period = int(round(1e9 / cfg.rate_hz))
    stamps: list[list[int]] = []
    conn = writer.add_connection(topic, COMPRESSED_T if compressed else IMAGE_T, typestore=TYPESTORE)
    info = writer.add_connection(info_topic, INFO_T, typestore=TYPESTORE) if cfg.camera_info else None
    t = cfg.start_ns
    for seq in sequences:
        stamps.append([])
        for rgb in seq:
            if t >= _STAMP_END_NS:     # a ROS time's seconds are an int32: serialize_cdr raised struct.error
                raise ValueError(f'frame {sum(map(len, stamps)) + 1} would be stamped past 2**31 s (the end of a '
                                 f'ROS time): rate_hz {cfg.rate_hz} is too low for this many frames')
            msgtype, msg = image_msg(rgb, t, cfg.frame_id, cfg.encoding, cfg.jpeg_quality)
            writer.write(conn, t, TYPESTORE.serialize_cdr(msg, msgtype))
            if info is not None:
                cam = camera_info_msg(rgb.shape[0], rgb.shape[1], t, cfg.frame_id)
                writer.write(info, t, TYPESTORE.serialize_cdr(cam, INFO_T))
            stamps[-1].append(t)
            t += period
            if progress:
                progress(1)
        t += int(cfg.gap_s * 1e9)
    return {'topic': topic, 'frames': sum(map(len, stamps)), 'stamps': stamps}


# rosbags names the storage file inside the bag folder after it: <name>.mcap, or <name>.db3 with sqlite's
# <name>.db3-journal beside it while writing
_STORAGE_SUFFIX = {'mcap': '.mcap', 'sqlite3': '.db3-journal'}
SQLITE_PATH_MAX = 511     # bytes of a whole path SQLite opens (its unix VFS's 512, less the terminating NUL)


def _exists(out: Path) -> str:
    """Why an existing ``out`` is refused, and what to do."""
    if (out / 'metadata.yaml').is_file():
        return f'{clip(out)} exists already (a bag): not overwriting; remove it or choose another --out'
    return (f'{clip(out)} exists and is no finished bag (no metadata.yaml: a partial bag from an interrupted '
            'run?): remove it or choose another --out')


def _check_new_bag(out: Path, storage: str) -> None:
    """Refuse an existing ``out`` (saying whether it is a bag) and a name too long for the bag's storage file."""
    if out.exists() or out.is_symlink():
        raise FileExistsError(_exists(out))
    suffix = _STORAGE_SUFFIX.get(storage, '.mcap')
    size, limit = len(os.fsencode(out.name)), name_limit(out)
    if size + len(suffix) > limit:
        raise ValueError(f'the bag name {clip(out.name)} is {size} bytes, too long: the bag\'s {storage} files '
                         f'inside it are named after it (<name>{suffix}, at most {limit} bytes); choose an '
                         f'--out name of at most {limit - len(suffix)} bytes')
    journal = os.fsencode(out.resolve() / f'{out.name}{suffix}')
    if storage == 'sqlite3' and len(journal) > SQLITE_PATH_MAX:
        raise ValueError(f'the sqlite3 bag\'s files would have paths of {len(journal)} bytes '
                         f'({clip(out)}/<name>{suffix}), and SQLite opens at most {SQLITE_PATH_MAX}: choose a '
                         'shorter --out, or --storage mcap')


def _undo(e: BaseException, new: list[Path], out: Path) -> BaseException:
    """Remove the folders this write made (``new``, deepest first: the bag, then empty parents) -> the error
    to raise: ``e``, an OSError with its path clipped so that its reason still fits a one-line message, or
    sqlite's error (a full disk is its "disk I/O error") as an OSError naming the bag."""
    if new:
        shutil.rmtree(new[0], ignore_errors=True)
        for folder in new[1:]:
            with contextlib.suppress(OSError):
                folder.rmdir()       # only when empty
    if isinstance(e, sqlite3.Error):
        return OSError(errno.EIO, f'sqlite3 storage: {e}; nothing was left behind', clip(out))
    if isinstance(e, OSError) and e.filename and len(str(e.filename)) > SHORT_TEXT:
        return OSError(e.errno, e.strerror or str(e), clip(e.filename))
    if type(e) is OSError and e.errno and not e.filename:   # rosbags' writer names no file: '[Errno 27] File too large'
        why = (' (past the largest file this process or file system may write: ulimit -f; FAT32 takes 4 GB at most)'
               if e.errno == errno.EFBIG else '')
        return OSError(e.errno, f'{e.strerror or e}{why}; nothing was left behind', clip(out))
    return e


def find_sequences(source: str | Path) -> list[tuple[str, Iterable[np.ndarray]]]:
    """(name, frames) per sequence of a video, an image folder, or a folder of image folders.

    A folder's images are ``VideoFrames``'s listing of it, the one the video source node publishes: name order
    with numbers by value (``natural_key``: ``frame_2`` before ``frame_10``), hidden files (``.name``, macOS's
    ``._name``) left out, as are hidden sub-folders. A flat folder whose file names all look like
    ``<SEQ>_<FRAME>`` with more than one ``SEQ`` (CamVid) is split by that prefix, so each source video becomes
    its own sequence in the bag.
    """
    path = Path(source)
    if not path.is_dir():
        return [(path.stem if path.is_file() else path.name, _frames(VideoSource(path)))]
    try:
        frames = VideoSource(path)
    except ImageError:      # no images in it: a folder of image folders
        subs = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith('.')), key=natural_key)
        if not subs:
            raise FileNotFoundError(f'{path}: no images and no sub-folders with images') from None
        return [(p.name, _frames(VideoSource(p))) for p in subs]
    names = [_SEQ_NAME.match(p.stem) for p in frames.files]
    if not all(names):
        return [(path.name, _frames(frames))]
    # grouped in one pass: a pass over every file for each prefix grew with files x prefixes (30000 frames named
    # <date>_<second>_<frame>, 1000 prefixes: 3.2 s, against 0.05 s for 3000)
    groups: dict[str, list[Path]] = {}
    for p, m in zip(frames.files, names):
        groups.setdefault(m['seq'], []).append(p)
    if len(groups) > 1:
        return [(seq, _read_all(groups[seq])) for seq in sorted(groups, key=natural_key)]
    return [(path.name, _frames(frames))]


def _frames(vs: VideoSource) -> Iterable[np.ndarray]:
    """The frames of ``vs``; an ImageError at the first video frame that did not decode. VideoFrames skips it
    (a stream goes on), but a bag that silently lacks it breaks the all-frames promise and, stamped at a fixed
    rate, shifts every later frame back in time: bad input is a clear error, and write_bag leaves no bag."""
    for _, rgb in vs:
        _refuse_skipped(vs)
        yield rgb
    _refuse_skipped(vs)


def _refuse_skipped(vs: VideoSource) -> None:
    if vs.skipped:
        raise ImageError(f'video {clip(vs.source)}: {vs.skipped} frame(s) did not decode; a bag without them '
                         'would miss frames and shift every later stamp, so none was written (re-encode the '
                         'video, or export its frames to a folder and convert that)')


def _read_all(paths: list[Path]) -> Iterable[np.ndarray]:
    return (read_frame(p) for p in paths)      # refused from the header above MAX_INPUT_PIXELS, as VideoFrames


def frames_to_bag(source: str | Path | list[Path], out: str | Path,
                  cfg: BagFromFramesConfig | None = None,
                  progress: Callable[[int], None] | None = None) -> dict:
    """``vidseg bag-from-frames``: a folder/video (or a list of image files) -> bag.

    Returns the ``write_bag`` summary plus ``sequences`` (names in bag order).
    """
    if isinstance(source, (list, tuple)):
        seqs = [('files', _read_all(list(source)))]
    else:
        seqs = find_sequences(source)
    summary = write_bag(out, (frames for _, frames in seqs), cfg, progress)
    summary['sequences'] = [name for name, _ in seqs]
    return summary

