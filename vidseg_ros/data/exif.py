"""EXIF orientation of compressed frames kept as recorded (``vidseg extract --image-format keep``).

A JPEG or PNG may carry an EXIF Orientation tag (2..8: turn the stored pixels for display). The segmenter
node decodes a ``CompressedImage`` as stored (``images.decode_compressed`` ignores the tag), but a frame
file is read by training, eval and propagation as displayed (``images.read_rgb``: ``cv2.imread`` turns it).
A frame kept with its tag would be trained on turned and met unturned by the node. ``upright_bytes`` sets
the tag to 1 (as stored) in place: the same bytes but two (a JPEG) or six (a PNG, with the chunk's CRC), no
pixel re-encoded, so every reader sees what the node sees.
"""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np

from vidseg_ros.data.image_headers import _PNG_MAGIC, jpeg_segments, tiff_directory
from vidseg_ros.data.images import ImageError, compressed_payload, decode_compressed, is_compressed_depth, short

_ORIENT_TAG = 0x0112
_SHORT, _LONG = 3, 4


def _upright_tiff(buf: bytearray, start: int, end: int) -> tuple[int, bool]:
    """Set every Orientation entry of the EXIF (TIFF) block ``buf[start:end]``'s first IFD to 1.

    -> (the orientation it had, 1 when none; whether the block was read to its end: False for a malformed
    one, which some other reader may still take an orientation from)."""
    tiff = bytes(buf[start:end])
    try:
        order, entries, whole = tiff_directory(io.BytesIO(tiff), tiff[:16])
    except ImageError:
        return 1, False
    found = 1
    for tag, kind, value, at in entries:
        if tag != _ORIENT_TAG:
            continue
        if kind not in (_SHORT, _LONG):     # a type no writer uses for it: left as it is, and said to be unsure
            whole = False
            continue
        struct.pack_into(order + ('H' if kind == _SHORT else 'I'), buf, start + at, 1)
        if found == 1:
            found = value
    return found, whole


def _jpeg_exif_blocks(buf: bytes):
    """(start, end) of the TIFF block of every APP1 Exif segment before the image data."""
    try:
        for marker, i, length in jpeg_segments(buf):
            if marker == 0xE1 and buf[i + 4:i + 10] == b'Exif\x00\x00':
                yield i + 10, min(i + 2 + length, len(buf))
    except ImageError:   # no marker where one should be: the header ends there for this purpose
        return


def _png_exif_chunks(buf: bytes):
    """(start, end) of the data of every eXIf chunk before the image data."""
    i = 8
    while i + 8 <= len(buf):
        length, name = struct.unpack('>I', buf[i:i + 4])[0], buf[i + 4:i + 8]
        if name in (b'IDAT', b'IEND'):
            return
        if name == b'eXIf':
            yield i + 8, min(i + 8 + length, len(buf))
        i += 12 + length


def upright_bytes(data: bytes) -> tuple[bytes, int, bool]:
    """A PNG / JPEG file's bytes with its EXIF orientation set to 1 (as stored), nothing else changed.

    Returns:
        (the bytes, the orientation they had (1: none, or none found), whether the answer is certain: False
        when an EXIF block is malformed or holds the tag in an unusual form, so a decoder may still turn the
        image: the caller checks by decoding).
    """
    is_png = data[:8] == _PNG_MAGIC
    if not is_png and data[:2] != b'\xff\xd8':
        return data, 1, True
    blocks = list(_png_exif_chunks(data) if is_png else _jpeg_exif_blocks(data))
    if not blocks:
        return data, 1, True
    buf, orientation, certain = bytearray(data), 1, True
    for start, end in blocks:
        value, whole = _upright_tiff(buf, start, end)
        certain = certain and whole
        orientation = value if orientation == 1 else orientation
        if is_png and end + 4 <= len(buf) and buf[start:end] != data[start:end]:   # the CRC covers name + data
            struct.pack_into('>I', buf, end, zlib.crc32(bytes(buf[start - 4:end])) & 0xFFFFFFFF)
    return bytes(buf), orientation, certain


def kept_frame_bytes(data: bytes, fmt: str, suffix: str, quality: int) -> tuple[bytes, str]:
    """The bytes to write for a ``CompressedImage`` kept as recorded, read as the node reads the message.

    Args:
        data: the message's bytes; fmt: its format string; suffix: the file's (``.jpg``/``.png``);
        quality: JPEG quality should the frame have to be encoded again.

    Returns:
        (bytes, what was done: ``''`` (nothing: no orientation), ``'reset'`` (the tag set to 1, no pixel
        touched) or ``'reencoded'`` (a tag this could not reset: the pixels as stored, encoded again)).
    """
    if is_compressed_depth(fmt):    # its 12-byte depth header made the kept .png a file no reader opens
        data, fmt = _depth_png(data, fmt), 'png'
    fixed, orientation, certain = upright_bytes(data)
    if orientation == 1 and certain:
        return data, ''
    stored = decode_compressed(fmt, data)       # what the node sees: the tag ignored
    shown = cv2.imdecode(np.frombuffer(fixed, np.uint8), cv2.IMREAD_COLOR)    # what read_rgb will see
    if shown is not None and shown.shape == stored.shape and np.array_equal(shown[:, :, ::-1], stored):
        return fixed, 'reset' if fixed != data else ''
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix == '.jpg' else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(stored[:, :, ::-1]), params)
    if not ok:
        raise ImageError(f'cannot encode a {stored.shape} frame as {suffix}')
    return buf.tobytes(), 'reencoded'


def _depth_png(data: bytes, fmt: str) -> bytes:
    """The PNG of a compressedDepth message, its 12-byte depth header left out; an ImageError when no PNG
    follows it (another compressed_depth codec, e.g. RVL: no image file holds it as recorded)."""
    png = bytes(compressed_payload(fmt, data))
    if png[:8] != _PNG_MAGIC:
        raise ImageError(f'compressedDepth image (format {short(fmt)}) holds no PNG after its 12-byte header: '
                         'it cannot be kept as a file')
    return png
