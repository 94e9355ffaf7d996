"""Images as pixels, without ROS: sensor_msgs/Image encodings <-> numpy (cv_bridge's Python part is often
unusable), compressed payloads and image files decoded to 8-bit RGB or label ids, and written atomically.

Works on the message *fields* (encoding, height, width, step, data, is_bigendian) so the same code
serves rclpy messages, rosbags-deserialised messages and mcap-ros2 messages. Nothing is decoded before
its size is known from its header (``image_headers``) and checked (``check_pixels``).
"""
from __future__ import annotations

import array
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.data.image_headers import (_BIGTIFF_INTS, _ORIENT_TAG, ImageError, _file_kind, _pam_header,
                                          _pnm_header, _tiff_info, compressed_size, image_file_info,
                                          tiff_directory)
from vidseg_ros.files import cv_path, open_regular, write_file_atomic  # noqa: F401  (write_file_atomic's home is files.py; kept importable here)
from vidseg_ros.text import SHORT_TEXT, clip, short  # noqa: F401  (their home is text.py; kept importable here)


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
            img = cv2.imread(cv_path(path), flags)
            if img is None and kind == 'jp2' and flags == cv2.IMREAD_COLOR:   # OpenCV: a grey codestream is not sRGB
                grey = cv2.imread(cv_path(path), cv2.IMREAD_GRAYSCALE)
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
        img = cv2.imread(cv_path(path), cv2.IMREAD_UNCHANGED if flags == cv2.IMREAD_COLOR else flags)
    if img is None or flags != cv2.IMREAD_COLOR:
        return img
    img = img[:, :, 0] if img.ndim == 3 and img.shape[2] < 3 else img     # grey (+ alpha)
    if maxval in (None, 255, 65535):    # a PBM, or full scale: as OpenCV reads a PNG
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img
    else:
        img = np.clip(np.rint(img.astype(np.float32) * (255.0 / max(maxval, 1))), 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else np.ascontiguousarray(img[:, :, :3])


def palette_index_pixels(path, bgr: np.ndarray, palette: list[tuple[int, int, int]], ignore_index: int) -> np.ndarray:
    """A paletted PNG's class ids: its indices as stored, turned as displayed (as ``read_label_pixels`` turned
    ``bgr``, OpenCV's expansion of it); mapped back from ``bgr``'s colours (``palette_indices``) only where the
    file cannot be decoded with a grey palette. Label import, training and finetune all read them so (training
    made 255, unlabelled, class 0 where the palette was padded with black, and merged two classes of one colour,
    while label-import read the indices)."""
    exact = _stored_palette_indices(path)
    return orient(exact, image_file_info(path)[2]) if exact is not None else palette_indices(bgr, palette,
                                                                                            ignore_index)


def _stored_palette_indices(path) -> np.ndarray | None:
    """A paletted PNG's indices as stored (not turned), or None if it cannot be read so. Read back from OpenCV's
    colours, an index was lost where two entries share a colour (a palette padded with black: 255, unlabelled,
    became 0) or lies past a short palette (libpng shows it black); so the palette is swapped for a grey ramp
    (entry i = (i, i, i)) and the file decoded again."""
    with open_regular(path) as f:
        data = f.read()
    out, at, bits = [data[:8]], 8, None
    while at + 12 <= len(data):
        (n,), kind = struct.unpack('>I', data[at:at + 4]), data[at + 4:at + 8]
        chunk = data[at:at + 12 + n]
        if kind == b'IHDR':
            bits = data[at + 16] if n >= 13 else None
        elif kind == b'PLTE' and bits in (1, 2, 4, 8):
            body = bytes(np.repeat(np.arange(2 ** bits, dtype=np.uint8), 3))
            chunk = struct.pack('>I', len(body)) + b'PLTE' + body + struct.pack('>I', zlib.crc32(b'PLTE' + body))
        if kind != b'tRNS':     # alpha comes from the first read
            out.append(chunk)
        at += 12 + n
        if kind == b'IEND':
            break
    img = cv2.imdecode(np.frombuffer(b''.join(out), np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.dtype != np.uint8:
        return None
    return img[:, :, 0].copy()


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
