"""A frame's file from its message: the suffix it gets (``file_suffix``) and the job, run in a worker process,
that decodes the message (or keeps a PNG / JPEG as recorded) and writes the file atomically (``write_job``)."""
from __future__ import annotations

import errno
from pathlib import Path

import cv2

from vidseg_ros.data.bags.reader import RawMessage, deserialize
from vidseg_ros.data.datasets.image_messages import decode_message, format_cell
from vidseg_ros.data.exif import kept_frame_bytes
from vidseg_ros.data.image_headers import compressed_size
from vidseg_ros.data.images import ImageError, is_compressed_depth, write_file_atomic, write_image_atomic
from vidseg_ros.text import clip

JPEG_MAX_SIDE = 65500       # libjpeg's largest width or height


def write_job(job: tuple, recorded=None) -> tuple[int, str, str, str]:
    """Worker: decode one message and write its file atomically -> (bytes, encoding, error, EXIF action:
    ``data.exif.kept_frame_bytes``). ``recorded``: the message deserialised where its bytes are written as
    recorded (``kept_as_recorded``; in the main process), else None."""
    msg, path, quality = job
    path = Path(path)
    oriented = ''
    try:
        if recorded is not None:
            # Bytes as recorded: no decode, no re-encode, nothing lost; but an EXIF orientation is reset, as
            # the node ignores it and every file reader would turn the frame
            encoding = format_cell(recorded.format)
            data, oriented = kept_frame_bytes(bytes(recorded.data), recorded.format, path.suffix, quality)
            write_file_atomic(path, data, fsync=False)   # frames can be extracted again: no fsync
        else:
            rgb, encoding, _ = decode_message(msg)
            params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == '.jpg' else \
                [cv2.IMWRITE_PNG_COMPRESSION, 1]
            try:
                write_image_atomic(path, rgb[:, :, ::-1], params=params, fsync=False)
            except ImageError:      # said only 'cannot encode 1700000000.jpg': the size is the likely why
                h, w = rgb.shape[:2]
                why = '; JPEG holds at most 65500 pixels a side: extract with --image-format png' \
                    if path.suffix == '.jpg' and max(h, w) > JPEG_MAX_SIDE else ''
                return 0, encoding, f'cannot encode {path.name} ({w}x{h}){why}', ''
        return path.stat().st_size, encoding, '', oriented
    except OSError as e:        # disk full / permissions: stop, do not skip frames silently (no half file left)
        raise _write_error(e, path) from e
    except Exception as e:  # noqa: BLE001 - one damaged message must not stop the run
        return 0, '', f'{type(e).__name__}: {clip(e, 1000)}', ''    # it may quote the message's own fields


# Errors that free space (or a higher file size limit) fixes; a re-run then resumes.
_NO_ROOM = {errno.ENOSPC: 'free some space', errno.EDQUOT: 'free some space (disk quota)',
            errno.EFBIG: 'free some space or raise the file size limit (ulimit -f)'}


def _write_error(e: OSError, path: Path) -> OSError:
    """``e`` naming the frame file it failed on, with what to do when the disk is full."""
    hint = _NO_ROOM.get(e.errno)
    reason = e.strerror or str(e)
    if hint:
        reason += f'; {hint}, then re-run: extraction resumes where it stopped'
    return OSError(e.errno, reason, str(path))


def kept_as_recorded(msg: RawMessage, fmt: str, m=None):
    """The message deserialised where ``--image-format keep`` writes its bytes as recorded, else None: a
    CompressedImage holding a PNG or JPEG (or a compressedDepth PNG). Other formats the node decodes (WebP, BMP)
    are decoded and written as PNG, the frame the node sees: a WebP's EXIF orientation, which file readers apply,
    cannot be reset in place. Bytes no header makes an image of are a failed frame (they were written as a .jpg
    and counted as extracted). ``m``: the message already deserialised (None: deserialised here), so that a kept
    frame is deserialised once on its way from the planner to its file."""
    if fmt != 'keep' or not msg.msgtype.endswith('CompressedImage'):
        return None
    if m is None:
        m = deserialize(msg)
    if is_compressed_depth(m.format):
        return m
    try:
        return m if compressed_size(memoryview(m.data))[0] in ('png', 'jpeg') else None
    except ImageError:
        return None


def file_suffix(recorded, fmt: str) -> str:
    """The suffix of a frame's file; ``recorded``: the message where it is kept as recorded
    (``kept_as_recorded``), else None."""
    if recorded is not None:
        # compressedDepth is a PNG kept without its depth header, also where the format does not say png
        # ("16UC1; compressedDepth")
        fmt_text = str(recorded.format)
        return '.png' if 'png' in fmt_text.lower() or is_compressed_depth(fmt_text) else '.jpg'
    return '.jpg' if fmt == 'jpg' else '.png'
