"""sensor_msgs/Image encodings <-> numpy, without ROS (cv_bridge's Python part is often unusable).

Works on the message *fields* (encoding, height, width, step, data, is_bigendian) so the same code
serves rclpy messages, rosbags-deserialised messages and mcap-ros2 messages.
"""
from __future__ import annotations

import array
import io
import struct
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.files import open_regular, write_file_atomic  # noqa: F401  (write_file_atomic's home is files.py; kept importable here)
from vidseg_ros.text import SHORT_TEXT, clip, short  # noqa: F401  (their home is text.py; kept importable here)


class ImageError(ValueError):
    """A malformed or unsupported image; the message says what is wrong with it."""


def check_pixels(height: int, width: int, max_pixels: int | None, what: str = 'image') -> None:
    """Refuse a frame whose header claims more than ``max_pixels`` pixels, before anything is allocated."""
    if max_pixels and height * width > max_pixels:
        raise ImageError(f'{what} of {width}x{height} = {height * width} pixels exceeds max_input_pixels '
                         f'{max_pixels}')


# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[str, int]] = {
    'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'rgba8': ('u1', 4), 'bgra8': ('u1', 4),
    'mono8': ('u1', 1), '8UC1': ('u1', 1), '8UC3': ('u1', 3), '8UC4': ('u1', 4),
    'mono16': ('u2', 1), '16UC1': ('u2', 1), 'rgb16': ('u2', 3), 'bgr16': ('u2', 3),
    '32FC1': ('f4', 1),
    'bayer_rggb8': ('u1', 1), 'bayer_bggr8': ('u1', 1), 'bayer_gbrg8': ('u1', 1), 'bayer_grbg8': ('u1', 1),
    'yuv422': ('u1', 2), 'uyvy': ('u1', 2), 'yuv422_yuy2': ('u1', 2), 'yuyv': ('u1', 2),
}

# OpenCV names the Bayer pattern by the 2x2 block starting at the second row/col: RGGB -> BG.
_BAYER_TO_RGB = {
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
}
_YUV_TO_RGB = {
    'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2, 'yuyv': cv2.COLOR_YUV2RGB_YUY2,
}


def image_to_array(encoding: str, height: int, width: int, step: int, data,
                   is_bigendian: int = 0, max_pixels: int | None = None) -> np.ndarray:
    """View the bytes of an Image message as (H, W) or (H, W, C); validates every field first."""
    if encoding not in ENCODINGS:
        raise ImageError(f'unsupported encoding {short(encoding)}; supported: {", ".join(sorted(ENCODINGS))}')
    if height <= 0 or width <= 0:
        raise ImageError(f'zero-size image ({width}x{height})')
    check_pixels(height, width, max_pixels)
    dtype_code, channels = ENCODINGS[encoding]
    if encoding in _YUV_TO_RGB and width % 2:
        raise ImageError(f'{encoding} packs two pixels in 4 bytes: width must be even, got {width}')
    dtype = np.dtype(dtype_code).newbyteorder('>' if is_bigendian else '<')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(f'step {step} is smaller than width*channels*bytes = {row_bytes} '
                         f'for {width}x{height} {encoding}')
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if buf.size != step * height:
        raise ImageError(f'data has {buf.size} bytes, expected step*height = {step}*{height} = '
                         f'{step * height} for {width}x{height} {encoding}')
    rows = buf.reshape(height, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype) if step != row_bytes else rows.view(dtype)
    arr = arr.reshape(height, width, channels)
    if dtype.byteorder == '>':
        arr = arr.astype(dtype.newbyteorder('='))
    return arr[:, :, 0] if channels == 1 else arr


def to_rgb8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Any supported encoding's array -> (H, W, 3) uint8 RGB, the engine's input format."""
    if encoding == 'rgb8' or encoding == '8UC3':
        return arr
    if encoding == 'bgr8':
        return arr[:, :, ::-1]
    if encoding in ('rgba8', '8UC4'):
        return arr[:, :, :3]
    if encoding == 'bgra8':
        return arr[:, :, 2::-1]
    if encoding in ('mono8', '8UC1'):
        return np.repeat(arr[:, :, None], 3, axis=2)
    if encoding in ('mono16', '16UC1'):
        return np.repeat((arr >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    if encoding in ('rgb16', 'bgr16'):
        rgb = (arr >> 8).astype(np.uint8)
        return rgb if encoding == 'rgb16' else rgb[:, :, ::-1]
    if encoding == '32FC1':
        scaled = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
        gray = (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if encoding in _BAYER_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(arr), _BAYER_TO_RGB[encoding])
    if encoding in _YUV_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(arr), _YUV_TO_RGB[encoding])
    raise ImageError(f'unsupported encoding {short(encoding)}')


def from_rgb8(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the array of a raw Image in ``encoding`` (what the writers publish).

    mono8 is BT.601 luma as OpenCV's ``cvtColor(RGB2GRAY)`` computes it (0.299 R + 0.587 G + 0.114 B),
    the grey every ROS image pipeline (cv_bridge, image_proc) produces.
    """
    if encoding in ('rgb8', '8UC3'):
        return rgb
    if encoding == 'bgr8':
        return rgb[:, :, ::-1]
    if encoding in ('rgba8', 'bgra8'):
        c = rgb if encoding == 'rgba8' else rgb[:, :, ::-1]
        return np.concatenate([c, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if encoding in ('mono8', '8UC1'):
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    raise ImageError(f'cannot write encoding {short(encoding)}; use rgb8, bgr8, rgba8, bgra8 or mono8')


def pinhole_intrinsics(width: int, height: int, hfov_deg: float = 60.0) -> tuple[list[float], list[float]]:
    """K (3x3) and P (3x4), row-major, of an ideal pinhole for sources without calibration.

    The principal point is the image centre in the convention of sensor_msgs/CameraInfo and OpenCV
    (pixel centres at integer coordinates, the first at (0, 0)): ((w - 1) / 2, (h - 1) / 2), as
    OpenCV's calibration (which ROS camera_calibration runs) starts from.
    """
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return ([fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0],
            [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def image_fields_to_rgb8(encoding: str, height: int, width: int, step: int, data,
                         is_bigendian: int = 0, max_pixels: int | None = None) -> np.ndarray:
    """Image message fields -> (H, W, 3) uint8 RGB; any failure is an ImageError."""
    arr = image_to_array(encoding, height, width, step, data, is_bigendian, max_pixels)
    try:
        return to_rgb8(arr, encoding)
    except cv2.error as e:  # OpenCV assertions on shapes the checks above did not foresee
        raise ImageError(f'cannot convert {width}x{height} {encoding}: {_cv_reason(e)}') from None


def _cv_reason(e: Exception) -> str:
    """The assertion text of a cv2.error, without OpenCV's multi-line file/function preamble."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return clip(lines[-1] if lines else type(e).__name__)


def array_to_image_fields(arr: np.ndarray, encoding: str) -> dict:
    """(H, W[, C]) array -> Image message fields (tight rows, little endian, bytes data)."""
    if encoding not in ENCODINGS:
        raise ImageError(f'unsupported encoding {short(encoding)}; supported: {", ".join(sorted(ENCODINGS))}')
    dtype_code, channels = ENCODINGS[encoding]
    arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype_code).newbyteorder('<'))
    got = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.ndim not in (2, 3) or got != channels:
        raise ImageError(f'{encoding} needs {channels} channel(s), array has shape {arr.shape}')
    height, width = arr.shape[:2]
    return {'encoding': encoding, 'height': height, 'width': width, 'is_bigendian': 0,
            'step': width * channels * arr.dtype.itemsize, 'data': arr.tobytes()}


_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_segments(buf: bytes | memoryview):
    """(marker, offset, length) of each length-carrying marker segment of a JPEG header, in order, up to the start
    of scan or a length below 2 (malformed). Stray bytes before a marker are skipped, as libjpeg skips them; an
    ImageError when no marker follows within 64 KiB."""
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:     # libjpeg skips them ('N extraneous bytes before marker') and decodes the image
            skip = bytes(buf[i:i + (1 << 16)]).find(b'\xff')
            if skip < 0:
                raise ImageError(f'corrupt JPEG: no marker at byte {i}')
            i += skip
            continue
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no header segment after it
            return
        (length,) = struct.unpack('>H', buf[i + 2:i + 4])
        yield marker, i, length
        if length < 2:
            return
        i += 2 + length


# The formats a CompressedImage may hold: those whose size is read from the header before any decoding. OpenCV
# decodes more (GIF, JPEG 2000, PNM, AVIF, TIFF): refused, their size unchecked. TIFF also because OpenCV turns
# a TIFF by its Orientation tag even with IMREAD_UNCHANGED: its header's size is not the decoded one.
COMPRESSED_KINDS = ('png', 'jpeg', 'webp', 'bmp')


def compressed_size(buf: bytes | memoryview) -> tuple[str, int, int]:
    """(kind, height, width) from the header of a PNG (IHDR), JPEG (SOF), WebP (VP8 / VP8L / VP8X) or BMP (DIB
    header), without decoding any pixel; an ImageError for another format or a truncated header."""
    if buf[:8] == _PNG_MAGIC:
        if len(buf) < 24 or buf[12:16] != b'IHDR':
            raise ImageError(f'truncated PNG header ({len(buf)} bytes)')
        width, height = struct.unpack('>II', buf[16:24])
        return 'png', height, width
    if buf[:2] == b'\xff\xd8':
        for marker, i, _ in jpeg_segments(buf):
            if marker in _JPEG_SOF:
                if i + 9 > len(buf):
                    break
                height, width = struct.unpack('>HH', buf[i + 5:i + 9])
                return 'jpeg', height, width
        raise ImageError(f'corrupt JPEG: no frame header (SOF) in {len(buf)} bytes')
    for magic, reader in _HEADER_READERS:
        if bytes(buf[:len(magic)]) == magic:
            return reader(buf)
    raise ImageError(f'compressed data is not PNG, JPEG, WebP or BMP (starts with {bytes(buf[:8])!r})')


def _webp_size(buf) -> tuple[str, int, int]:
    """A WebP's size from its first chunk: VP8 (lossy: 14-bit sizes after the start code 9d 01 2a), VP8L
    (lossless: 14-bit sizes less one after the signature 0x2f) or VP8X (extended: the canvas, 24-bit sizes less
    one; libwebp refuses an image whose bitstream is not of the canvas size)."""
    if bytes(buf[8:12]) != b'WEBP':
        raise ImageError(f'compressed data is a RIFF file but not WebP ({bytes(buf[8:12])!r})')
    chunk, need = bytes(buf[12:16]), {b'VP8 ': 30, b'VP8L': 25, b'VP8X': 30}
    if chunk not in need:
        raise ImageError(f'corrupt WebP: first chunk {chunk!r} is not VP8, VP8L or VP8X' if len(buf) >= 16 else
                         f'truncated WebP header ({len(buf)} bytes)')
    if len(buf) < need[chunk]:
        raise ImageError(f'truncated WebP header ({len(buf)} bytes)')
    if chunk == b'VP8 ':
        if bytes(buf[23:26]) != b'\x9d\x01\x2a':
            raise ImageError('corrupt WebP: no VP8 start code')
        width, height = struct.unpack('<HH', buf[26:30])
        return 'webp', height & 0x3FFF, width & 0x3FFF      # the top 2 bits are an upscaling hint, not the size
    if chunk == b'VP8L':
        if buf[20] != 0x2F:
            raise ImageError('corrupt WebP: no VP8L signature')
        (bits,) = struct.unpack('<I', buf[21:25])
        return 'webp', ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    return 'webp', int.from_bytes(buf[27:30], 'little') + 1, int.from_bytes(buf[24:27], 'little') + 1


def _bmp_size(buf) -> tuple[str, int, int]:
    """A BMP's size from its DIB header: 16-bit in the OS/2 core header (12 bytes), else 32-bit signed (a
    negative height is a top-down image)."""
    if len(buf) < 18:
        raise ImageError(f'truncated BMP header ({len(buf)} bytes)')
    (dib,) = struct.unpack('<I', buf[14:18])
    if dib == 12:
        if len(buf) < 22:
            raise ImageError(f'truncated BMP header ({len(buf)} bytes)')
        width, height = struct.unpack('<HH', buf[18:22])
        return 'bmp', height, width
    if dib < 40:
        raise ImageError(f'corrupt BMP: a {dib}-byte DIB header')
    if len(buf) < 26:
        raise ImageError(f'truncated BMP header ({len(buf)} bytes)')
    width, height = struct.unpack('<ii', buf[18:26])
    if width < 0:
        raise ImageError(f'corrupt BMP: negative width {width}')
    return 'bmp', abs(height), width


# magic -> the reader of the size of the formats after PNG and JPEG
_HEADER_READERS = ((b'RIFF', _webp_size), (b'BM', _bmp_size))


# image_transport's compressed_depth: a header (format enum, two depth quantisation floats) before the PNG
DEPTH_HEADER_BYTES = 12


def is_compressed_depth(fmt) -> bool:
    """A compressedDepth CompressedImage, spelt as compressed_depth_image_transport writes it: the one test, so that
    what extract keeps and what the node decodes agree (a lowercase spelling kept as depth by one and not the other
    made a .png no reader opens)."""
    return 'compressedDepth' in str(fmt)


def compressed_payload(fmt: str, data):
    """The image file bytes in a CompressedImage's ``data`` (a slice of it): compressedDepth puts a 12-byte
    header before its PNG; other formats are the file as they are."""
    if not is_compressed_depth(fmt):
        return data
    if len(data) <= DEPTH_HEADER_BYTES:
        raise ImageError(f'compressedDepth image of {len(data)} bytes has no PNG after its 12-byte header')
    return data[DEPTH_HEADER_BYTES:]


def decode_compressed(fmt: str, data, max_pixels: int | None = None) -> np.ndarray:
    """CompressedImage (jpeg/png/webp/bmp, any format string ROS tools write) -> (H, W, 3) uint8 RGB.

    The size is read from the header (``compressed_size``) and checked against ``max_pixels`` before decoding,
    so a small file claiming a huge image (a decompression bomb) costs nothing.
    """
    fmt = str(fmt)
    # rclpy hands uint8[] over as array.array: a buffer numpy reads in place (no copy of the frame)
    buf = np.frombuffer(data if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray))
                        else bytes(data), dtype=np.uint8)
    if buf.size == 0:
        raise ImageError(f'empty compressed image (format {short(fmt)})')
    buf = compressed_payload(fmt, buf)
    _, height, width = compressed_size(memoryview(buf))   # the header only: no copy of the data
    if height <= 0 or width <= 0:
        raise ImageError(f'compressed image header claims a zero size ({width}x{height})')
    check_pixels(height, width, max_pixels, 'compressed image')
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            raise ImageError(f'cannot decode compressed image ({buf.size} bytes, format {short(fmt)})')
        check_pixels(img.shape[0], img.shape[1], max_pixels, 'decoded image')
        return _decoded_to_rgb8(img)
    except cv2.error as e:
        raise ImageError(f'cannot decode compressed image ({buf.size} bytes, format {short(fmt)}): '
                         f'{_cv_reason(e)}') from None


def _decoded_to_rgb8(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    # cv2 decodes colour as BGR regardless of the format string's "rgb8;" prefix.
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> tuple[str, bytes]:
    """(H, W, 3) RGB -> (format string, bytes) as image_transport's compressed plugin writes them."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
    if ext is None:
        raise ImageError(f'unsupported compressed format {fmt!r}; use jpeg or png')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f'OpenCV could not encode a {rgb.shape} image as {fmt}')
    return f'rgb8; {"jpeg" if ext == ".jpg" else "png"} compressed bgr8', buf.tobytes()


def read_rgb(path) -> np.ndarray:
    """Image file -> (H, W, 3) uint8 RGB, as displayed (see ``orient``), with a clear error for unreadable files."""
    try:
        img, orientation = _imread(path, cv2.IMREAD_COLOR)
    except (OSError, ImageError) as e:
        raise ImageError(f'cannot read image file {clip(path)}: {getattr(e, "strerror", None) or e}') from None
    if img is None:
        raise ImageError(f'cannot read image file {clip(path)}')   # a file name from someone's folder
    return cv2.cvtColor(orient(img, orientation), cv2.COLOR_BGR2RGB)


def write_image_atomic(path, array: np.ndarray, ext: str | None = None, params=(), fsync: bool = True) -> Path:
    """An image array (OpenCV's channel order: BGR, or one channel) encoded by its file type and written with
    ``write_file_atomic``: the one way dataset images, labels and masks reach the disk.

    Args:
        path: the file to write (replaced whole, or left as it was on an error).
        array: (H, W) or (H, W, 3|4) array, as ``cv2.imwrite`` takes it.
        ext: the format (``.png``, ``.jpg``); None = ``path``'s suffix.
        params: ``cv2.imencode`` flags (``[cv2.IMWRITE_JPEG_QUALITY, 95]``).
        fsync: see ``write_file_atomic``.
    """
    path = Path(path)
    ext = ext or path.suffix
    try:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(array), list(params))
    except cv2.error as e:
        raise ImageError(f'cannot encode a {array.shape} {array.dtype} image as {ext} for {clip(path)}: '
                         f'{_cv_reason(e)}') from None
    if not ok:
        raise ImageError(f'cannot encode a {array.shape} {array.dtype} image as {ext} for {clip(path)}')
    return write_file_atomic(path, buf, fsync=fsync)


# --- files as they are displayed: EXIF orientation, and PNG palettes --------------------------------------------
# A phone photo stores its pixels as the sensor read them and an EXIF Orientation tag (1..8) saying how to turn
# them for display. Every viewer and labelling tool shows the turned image, so a label drawn on it is in the
# displayed orientation, and cv2.imread(IMREAD_COLOR), which read_rgb uses for frames, turns it too. Labels are
# read with IMREAD_UNCHANGED, which does not: the one rule here is that frames and labels are both read as
# displayed (``orient``), and sizes are compared as displayed (``file_image_hw``).
_ORIENT_TAG = 0x0112


def _exif_tiff_orientation(tiff: bytes) -> int:
    """The Orientation of an EXIF (TIFF) block's first IFD; 1 when it has none or is malformed."""
    try:
        _, entries, _ = tiff_directory(io.BytesIO(tiff), tiff[:16])
    except ImageError:
        return 1
    for tag, kind, value, _ in entries:
        if tag == _ORIENT_TAG and kind == 3:        # SHORT
            return value if 1 <= value <= 8 else 1
    return 1


def _file_chunks(f, kind: str):
    """(name, payload) of the metadata blocks before the pixel data: JPEG APPn segments, PNG chunks or a WebP's
    EXIF chunk (a BMP has none)."""
    if kind == 'webp':
        f.seek(12)
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            name, length = head[:4], struct.unpack('<I', head[4:])[0]
            if length > 1 << 26:
                return
            if name == b'EXIF':     # the TIFF block; some writers put JPEG's "Exif\0\0" before it
                data = f.read(length)
                yield name, data[6:] if data[:6] == b'Exif\x00\x00' else data
                return
            f.seek(length + (length & 1), 1)    # chunks are padded to an even size
    elif kind == 'png':
        f.seek(8)
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            length, name = struct.unpack('>I', head[:4])[0], head[4:8]
            if name in (b'IDAT', b'IEND') or length > 1 << 26:
                return
            yield name, f.read(length)
            f.seek(4, 1)        # CRC
    elif kind == 'jpeg':
        f.seek(2)
        while True:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0xFF or head[1] == 0xDA:   # start of scan: no metadata after it
                return
            length = struct.unpack('>H', head[2:4])[0]
            yield head[1], f.read(max(length - 2, 0))


# TIFF tags of the size, and the field types of the integers read: SHORT, LONG, and BigTIFF's LONG8 (a classic TIFF's
# 4-byte field cannot hold one: read as 8 bytes, the last entry raised struct.error)
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_INTS = {3: 'H', 4: 'I'}
_BIGTIFF_INTS = {**_TIFF_INTS, 16: 'Q'}
_TIFF_MAGIC = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')
_PNM_MAGIC = tuple(b'P%d' % n for n in range(1, 7))


def tiff_directory(f, head: bytes) -> tuple[str, list[tuple[int, int, int | None, int]], bool]:
    """The first directory (IFD) of a TIFF, the one OpenCV reads and EXIF keeps the orientation in: the one walker of
    TIFF files (sizes, orientation) and EXIF blocks (orientation, ``exif.upright_bytes``).

    Args:
        f: reads the TIFF from its first byte (a file: classic or BigTIFF; an EXIF block in a BytesIO). The directory
            may be anywhere in it (libtiff writes it after the pixels).
        head: its first 16 bytes (or more).

    Returns:
        (byte order: '<' or '>'; the entries as (tag, field type, the value if an integer type (SHORT, LONG, BigTIFF's
        LONG8) else None, the offset of the value field in ``f``); whether every entry was there). An ImageError for
        a damaged header.
    """
    if len(head) < 8 or head[:2] not in (b'II', b'MM'):
        raise ImageError(f'truncated TIFF header ({len(head)} bytes)')
    end = '<' if head[:2] == b'II' else '>'
    big = head[2:4] == (b'\x2b\x00' if end == '<' else b'\x00\x2b')
    if big and len(head) < 16:
        raise ImageError(f'truncated TIFF header ({len(head)} bytes)')
    if big:
        (offset,) = struct.unpack(end + 'Q', head[8:16])
        count_fmt, entry_bytes, value_at, ints = 'Q', 20, 12, _BIGTIFF_INTS
    else:
        (offset,) = struct.unpack(end + 'I', head[4:8])
        count_fmt, entry_bytes, value_at, ints = 'H', 12, 8, _TIFF_INTS
    f.seek(offset)
    raw = f.read(struct.calcsize(count_fmt))
    if len(raw) < struct.calcsize(count_fmt):
        raise ImageError(f'corrupt TIFF: its first directory (at byte {offset}) is past the end of the file')
    (count,) = struct.unpack(end + count_fmt, raw)
    data = f.read(min(count, 1 << 16) * entry_bytes)
    entries = []
    for at in range(0, len(data) - entry_bytes + 1, entry_bytes):
        tag, kind = struct.unpack(end + 'HH', data[at:at + 4])
        value = struct.unpack_from(end + ints[kind], data, at + value_at)[0] if kind in ints else None
        entries.append((tag, kind, value, offset + len(raw) + at + value_at))
    return end, entries, len(data) == count * entry_bytes


def _tiff_info(f, head: bytes) -> tuple[int, int, int]:
    """(height, width, orientation) of a TIFF from its first directory (``tiff_directory``): the ImageWidth,
    ImageLength and Orientation tags; an ImageError for a damaged header."""
    tags = {tag: value for tag, _, value, _ in tiff_directory(f, head)[1] if value is not None}
    if _TIFF_WIDTH not in tags or _TIFF_LENGTH not in tags:
        raise ImageError('corrupt TIFF: its first directory has no ImageWidth and ImageLength')
    orientation = tags.get(_ORIENT_TAG, 1)
    return tags[_TIFF_LENGTH], tags[_TIFF_WIDTH], orientation if 1 <= orientation <= 8 else 1


def _pnm_header(head: bytes) -> tuple[int, int, int | None]:
    """(height, width, maxval: None for a PBM) of a PBM / PGM / PPM (P1..P6, plain or raw): the numbers after the
    magic, with ``#`` comments running to the end of their line; an ImageError for a damaged header."""
    numbers, i, want = [], 2, 2 if head[1:2] in b'14' else 3
    while len(numbers) < want:
        while i < len(head) and head[i:i + 1] in b' \t\r\n\x0b\x0c':
            i += 1
        if head[i:i + 1] == b'#':
            i = head.find(b'\n', i)
            if i < 0:
                break
            continue
        start = i
        while i < len(head) and head[i:i + 1].isdigit():
            i += 1
        if i == start or i == len(head):
            break
        numbers.append(int(head[start:i]))
    if len(numbers) < 2:
        raise ImageError(f'corrupt {head[:2].decode()} (PNM) header: no width and height in its first '
                         f'{len(head)} bytes')
    return numbers[1], numbers[0], numbers[2] if len(numbers) > 2 else None


# The image files read: each sized from its header before any decoding (``image_file_info``). OpenCV decodes more
# (Radiance HDR, PFM, Sun raster, AVIF, OpenEXR...): those are refused by name (``_file_kind``), as sizing them
# meant decoding them whole (a 1.4 KB JPEG 2000 of 20000x20000 took 1.9 GB before the size check; GIF, HDR too),
# and float formats came out as garbage (a PFM of 0..1 as 0/1).
FILE_FORMATS = 'PNG, JPEG, WebP, BMP, TIFF, PNM (PBM/PGM/PPM/PAM), GIF or JPEG 2000'
_JP2_MAGIC, _J2K_MAGIC = b'\x00\x00\x00\x0cjP  \r\n\x87\n', b'\xff\x4f\xff\x51'   # a JP2 file, a bare codestream
_REFUSED = ((b'#?RADIANCE', 'a Radiance HDR image'), (b'#?RGBE', 'a Radiance HDR image'),
            (b'PF', 'a PFM (float) image'), (b'Pf', 'a PFM (float) image'), (b'\x59\xa6\x6a\x95', 'a Sun raster image'),
            (b'v/1\x01', 'an OpenEXR image'), (b'8BPS', 'a Photoshop image'))


def _file_kind(head: bytes) -> str:
    """An image file's format from its first 16 bytes: 'tiff', 'pnm', 'pam', 'gif', 'jp2', or 'compressed' (PNG,
    JPEG, WebP, BMP: ``compressed_size``); an ImageError naming any other."""
    if head[:4] in _TIFF_MAGIC:
        return 'tiff'
    if head[:2] in _PNM_MAGIC:
        return 'pnm'
    if head[:2] == b'P7' and head[2:3].isspace():
        return 'pam'
    if head[:6] in (b'GIF87a', b'GIF89a'):
        return 'gif'
    if head[:12] == _JP2_MAGIC or head[:4] == _J2K_MAGIC:
        return 'jp2'
    if head[:8] == _PNG_MAGIC or head[:2] in (b'\xff\xd8', b'BM') or head[:4] == b'RIFF':
        return 'compressed'
    what = next((name for magic, name in _REFUSED if head.startswith(magic)), None)
    if head[4:8] == b'ftyp':
        what = f'an ISO media file (brand {head[8:12]!r}: AVIF, HEIC or a video)'
    if what:
        raise ImageError(f'{what}, a format not read: convert it to one of {FILE_FORMATS}')
    raise ImageError(f'not a {FILE_FORMATS} file (it starts with {head[:8]!r})' if head else 'the file is empty')


def _pam_header(head: bytes) -> dict[bytes, int | bytes]:
    """A PAM (P7) header's fields before ENDHDR: WIDTH, HEIGHT, DEPTH (1 if absent), MAXVAL (ints), TUPLTYPE (bytes,
    if any), and ``b'start'``: where the samples start."""
    fields, at = {b'DEPTH': 1}, 3
    for line in head[3:].split(b'\n'):
        at += len(line) + 1
        words = line.split(b'#')[0].split()
        if words == [b'ENDHDR']:
            break
        if len(words) == 2 and words[0] in (b'WIDTH', b'HEIGHT', b'MAXVAL', b'DEPTH') and words[1].isdigit():
            fields[words[0]] = int(words[1])
        elif len(words) == 2 and words[0] == b'TUPLTYPE':
            fields[words[0]] = words[1]
    if b'WIDTH' not in fields or b'HEIGHT' not in fields:
        raise ImageError(f'corrupt P7 (PAM) header: no WIDTH and HEIGHT in its first {len(head)} bytes')
    return {**fields, b'start': at}


def _pam_size(head: bytes) -> tuple[int, int]:
    fields = _pam_header(head)
    return fields[b'HEIGHT'], fields[b'WIDTH']


def _pam_samples(path, head: bytes) -> np.ndarray:
    """A PAM's samples as stored, (H, W) or (H, W, DEPTH), 8-bit or (MAXVAL above 255) 16-bit; colour in OpenCV's
    order. Read here: OpenCV reads a MAXVAL 1 PAM (BLACKANDWHITE) as all 0s, refuses a 16-bit one without a TUPLTYPE,
    and takes the R, G, B of a TUPLTYPE RGB (netpbm, ImageMagick) for B, G, R (its own PAMs, without a TUPLTYPE, are
    written B, G, R)."""
    fields = _pam_header(head)
    height, width, depth = fields[b'HEIGHT'], fields[b'WIDTH'], max(fields[b'DEPTH'], 1)
    dtype = np.dtype('>u2' if fields.get(b'MAXVAL', 255) > 255 else 'u1')
    count = height * width * depth
    samples = np.fromfile(path, dtype, count=count, offset=fields[b'start'])    # what the file holds: no bomb
    if samples.size < count:
        raise ImageError(f'truncated PAM: {samples.size} of its {width}x{height}x{depth} samples')
    img = samples.astype(dtype.newbyteorder('=')).reshape(height, width, depth)
    if depth in (3, 4) and fields.get(b'TUPLTYPE', b'').startswith(b'RGB'):
        img = img[:, :, [2, 1, 0, 3][:depth]]
    return img[:, :, 0] if depth == 1 else img


def _gif_size(head: bytes) -> tuple[int, int]:
    """(height, width) of a GIF: its logical screen, which OpenCV decodes to (a frame outside it is refused)."""
    if len(head) < 10:
        raise ImageError(f'truncated GIF header ({len(head)} bytes)')
    width, height = struct.unpack('<HH', head[6:10])
    return height, width


def _jp2_size(f, head: bytes) -> tuple[int, int]:
    """(height, width) of a JPEG 2000 image from its codestream's SIZ marker, which the decoder reads (not the JP2
    header box, which may say otherwise): the image area (Xsiz - XOsiz, Ysiz - YOsiz) on the reference grid. The
    codestream is the file (.j2k) or the JP2 file's jp2c box."""
    at, code = 0, head[:24]
    if head[:4] != _J2K_MAGIC:
        for _ in range(1000):      # top-level boxes: a JP2 has a few
            f.seek(at)
            box = f.read(16)
            if len(box) < 8:
                break
            length, name = struct.unpack('>I4s', box[:8])
            header = 8 if length != 1 else 16
            if length == 1 and len(box) == 16:
                (length,) = struct.unpack('>Q', box[8:16])
            if name == b'jp2c':
                f.seek(at + header)
                code = f.read(24)
                break
            if length < header:     # 0: the last box, to the end of the file
                break
            at += length
    if len(code) < 24 or code[:4] != _J2K_MAGIC:
        raise ImageError('corrupt JPEG 2000: no codestream with a size (SIZ) marker found')
    x1, y1, x0, y0 = struct.unpack('>4I', code[8:24])
    if x0 > x1 or y0 > y1:
        raise ImageError(f'corrupt JPEG 2000: image offset ({x0}, {y0}) past its end ({x1}, {y1})')
    return y1 - y0, x1 - x0


def image_file_info(path) -> tuple[int, int, int, list[tuple[int, int, int]] | None]:
    """(height, width, orientation, PNG palette or None) of an image file from its headers, without decoding a pixel:
    the size *as stored* (``file_image_hw`` gives it as displayed), the EXIF orientation of a JPEG / PNG / WebP, the
    Orientation tag of a TIFF (else 1). A format not in FILE_FORMATS, or a damaged header, is an ImageError naming
    the file."""
    with open_regular(path) as f:     # a FIFO among the frames waited for a writer for good
        head = f.read(1 << 16)
        try:
            kind = _file_kind(head[:16])
            if kind == 'tiff':
                return (*_tiff_info(f, head), None)
            if kind == 'jp2':
                return (*_jp2_size(f, head), 1, None)
            if kind != 'compressed':
                return (*{'pnm': _pnm_header, 'pam': _pam_size, 'gif': _gif_size}[kind](head)[:2], 1, None)
            while True:
                try:
                    kind, height, width = compressed_size(head)
                    break
                except ImageError:      # a phone JPEG's EXIF, ICC and MPF blocks can pass 64 KiB
                    more = f.read(len(head)) if head[:2] == b'\xff\xd8' and len(head) < 1 << 24 else b''
                    if not more:
                        raise
                    head += more
        except ImageError as e:
            raise ImageError(f'cannot read image file {clip(path)}: {e}') from None
        orientation, palette = 1, None
        for name, data in _file_chunks(f, kind):
            if name in (b'eXIf', b'EXIF'):
                orientation = _exif_tiff_orientation(data)
            elif name == b'PLTE':
                palette = [tuple(data[i:i + 3]) for i in range(0, len(data) - 2, 3)]
            elif name == 0xE1 and data[:6] == b'Exif\x00\x00':
                orientation = _exif_tiff_orientation(data[6:])
    return height, width, orientation, palette


def file_image_hw(path) -> tuple[int, int]:
    """(height, width) of an image file as displayed (and as ``read_rgb`` reads it): EXIF orientations 5..8
    turn it by 90 degrees. From the headers, without decoding (``image_file_info``)."""
    height, width, orientation, _ = image_file_info(path)
    return (width, height) if orientation >= 5 else (height, width)


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> as displayed, for an EXIF Orientation 1..8 (what cv2.imread(IMREAD_COLOR) does)."""
    turns = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
             7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1]}
    return np.ascontiguousarray(turns.get(orientation, turns[1])(img))


def read_label_pixels(path) -> tuple[np.ndarray | None, list[tuple[int, int, int]] | None]:
    """A label file's pixels as stored in depth and channels (IMREAD_UNCHANGED: 16-bit, alpha, a palette
    expanded to colours), turned as displayed, like its frame (see above); and the PNG palette, if any."""
    try:
        img, _ = _imread(path, cv2.IMREAD_UNCHANGED)
    except OSError:
        return None, None
    except ImageError as e:
        raise ImageError(f'cannot read image file {clip(path)}: {e}') from None
    if img is None:
        return None, None
    _, _, orientation, palette = image_file_info(path)
    return orient(img, orientation), palette


def _imread(path, flags: int) -> tuple[np.ndarray | None, int]:
    """``cv2.imread(path, flags)`` of a file in FILE_FORMATS (others: ImageError), BGR as OpenCV gives colour, and the
    orientation still to apply (``orient``): 1, but for a TIFF with an Orientation tag, decoded as stored. OpenCV turns
    a TIFF by its tag's 2..4 whatever the flags (IMREAD_IGNORE_ORIENTATION too), and one of 5..8 it does not read
    (imread: None; OpenCV 4.14 and 5.0): the tag is set to 1 in a copy of the bytes, which is decoded. A PNM or PAM
    is read by ``_read_pnm``."""
    with open_regular(path) as f:     # a FIFO among the frames waited for a writer for good
        head = f.read(16)
        kind = _file_kind(head)
        fields = []
        if kind == 'tiff':
            order, entries, _ = tiff_directory(f, head)
            fields = [(order + _BIGTIFF_INTS[k], at) for tag, k, value, at in entries
                      if tag == _ORIENT_TAG and value is not None and value != 1]
        if not fields:
            if kind in ('pnm', 'pam'):
                return _read_pnm(path, flags, kind, head + f.read(1 << 16)), 1
            img = cv2.imread(str(path), flags)
            if img is None and kind == 'jp2' and flags == cv2.IMREAD_COLOR:   # OpenCV: a grey codestream is not sRGB
                grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                img = None if grey is None else cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
            return img, 1
        f.seek(0)
        data = bytearray(f.read())
    orientation = _tiff_info(io.BytesIO(data), bytes(data[:16]))[2]
    for fmt, at in fields:
        struct.pack_into(fmt, data, at, 1)
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags), orientation


def _read_pnm(path, flags: int, kind: str, head: bytes) -> np.ndarray | None:
    """A PNM or PAM as ``cv2.imread(path, flags)`` reads a PNG (BGR; 8-bit with IMREAD_COLOR), its samples as the
    format defines them: by its maxval, which OpenCV takes as the full scale of its depth when it is not 255 or 65535
    (a 10-bit camera's 1023: a black frame). A frame (IMREAD_COLOR) is scaled by the maxval; IMREAD_UNCHANGED keeps
    the stored values (label ids). A PAM is read by ``_pam_samples``."""
    if kind == 'pam':
        maxval, img = _pam_header(head).get(b'MAXVAL'), _pam_samples(path, head)
    else:
        maxval = _pnm_header(head)[2]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED if flags == cv2.IMREAD_COLOR else flags)
    if img is None or flags != cv2.IMREAD_COLOR:
        return img
    img = img[:, :, 0] if img.ndim == 3 and img.shape[2] < 3 else img     # grey (+ alpha)
    if maxval in (None, 255, 65535):    # a PBM, or full scale: as OpenCV reads a PNG
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img
    else:
        img = np.clip(np.rint(img.astype(np.float32) * (255.0 / max(maxval, 1))), 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else np.ascontiguousarray(img[:, :, :3])


def palette_indices(bgr: np.ndarray, palette: list[tuple[int, int, int]], ignore_index: int) -> np.ndarray:
    """A paletted PNG's pixel indices from OpenCV's expansion of it (BGR) and its PLTE colours.

    Paletted label PNGs (PASCAL VOC, DAVIS 2017, PIL's mode 'P', most labelling tools' exports) store the
    class id as the index and use the palette only to show it; OpenCV cannot read indices, so each colour
    is mapped back. A colour given to several entries (the unused entries of a padded palette are often
    all black) is the lowest of them: tools pad after the entries they use.
    """
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in palette[:256]], np.int32)
    first = {}
    for i, k in enumerate(keys.tolist()):
        first.setdefault(k, i)
    uniq = np.array(sorted(first), np.int32)
    index = np.array([first[k] for k in uniq.tolist()], np.uint8)
    packed = (bgr[..., 2].astype(np.int32) << 16) | (bgr[..., 1].astype(np.int32) << 8) | bgr[..., 0]
    pos = np.clip(np.searchsorted(uniq, packed), 0, len(uniq) - 1)
    hit = uniq[pos] == packed
    return np.where(hit, index[pos], np.uint8(ignore_index)).astype(np.uint8)


def grey_in_colour(img: np.ndarray) -> np.ndarray | None:
    """The one channel of a 3-channel image whose channels are equal at every pixel (a class-id mask saved as
    RGB, as many tools and scripts save masks), else None."""
    if img.ndim != 3 or img.shape[2] != 3:
        return None
    first = img[:, :, 0]
    return first.copy() if np.array_equal(first, img[:, :, 1]) and np.array_equal(first, img[:, :, 2]) else None
