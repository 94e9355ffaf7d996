"""Image files and compressed image payloads sized from their headers, without decoding a pixel.

The size check against a decompression bomb (``images.check_pixels``) needs width and height before any
pixel is allocated: PNG, JPEG, WebP and BMP payloads (``compressed_size``), and image files of every format
read here (``image_file_info``: also TIFF, PNM/PAM, GIF, JPEG 2000), with the orientation a file asks to be
displayed in. Formats outside ``FILE_FORMATS`` are refused by name: sizing them meant decoding them.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct
from contextvars import ContextVar

from vidseg_ros.files import open_regular
from vidseg_ros.text import clip


class ImageError(ValueError):
    """A malformed or unsupported image; the message says what is wrong with it."""


_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_segments(buf: bytes | memoryview):
    """(marker, offset, length) of each length-carrying marker segment of a JPEG header, in order, up to the start
    of scan. Stray bytes before a marker are skipped, as libjpeg skips them; an
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
        # a length below 2 counts no byte after itself: libjpeg reads on from there (here the header ended, and a
        # file OpenCV decodes, turned by an EXIF block after it, was refused as having no frame header)
        i += 2 + max(length, 2)


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


# --- files as they are displayed: EXIF orientation, and PNG palettes --------------------------------------------
# A phone photo stores its pixels as the sensor read them and an EXIF Orientation tag (1..8) saying how to turn
# them for display. Every viewer and labelling tool shows the turned image, so a label drawn on it is in the
# displayed orientation, and cv2.imread(IMREAD_COLOR), which read_rgb uses for frames, turns it too. Labels are
# read with IMREAD_UNCHANGED, which does not: the one rule here is that frames and labels are both read as
# displayed (``orient``), and sizes are compared as displayed (``file_image_hw``).
_ORIENT_TAG = 0x0112


def _exif_tiff_orientation(tiff: bytes) -> int | None:
    """The Orientation of an EXIF (TIFF) block's first IFD as OpenCV reads it (``read_rgb``): 1 for a value outside
    1..8, None when the block has none or is malformed (OpenCV then goes by the next EXIF block).

    OpenCV takes the first Orientation entry and reads a SHORT at its value field whatever type the entry says: a
    little-endian LONG or BYTE 6 turns the image (a big-endian LONG 6 reads as 0: not turned). Only SHORTs were
    read here, so such a frame was sized, and its labels turned, as not turned."""
    try:
        order, entries, _ = tiff_directory(io.BytesIO(tiff), tiff[:16])
    except ImageError:
        return None
    for tag, _, _, at in entries:
        if tag == _ORIENT_TAG:
            (value,) = struct.unpack_from(order + 'H', tiff, at)
            return value if 1 <= value <= 8 else 1
    return None


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
    elif kind == 'jpeg':    # walked as jpeg_segments walks it: stray and fill bytes skipped, as libjpeg does (an
        f.seek(2)           # EXIF block after stray bytes turned the frame in OpenCV, and was not seen here)
        stray = 0
        while True:
            head = f.read(4)
            if len(head) < 4 or (head[0] == 0xFF and head[1] in (0xDA, 0xD9)):   # start of scan: no metadata after
                return
            if head[0] != 0xFF or head[1] in (0xFF, 0x01, 0xD8) or 0xD0 <= head[1] <= 0xD7:
                skip = 2 if head[0] == 0xFF and head[1] != 0xFF else 1      # a marker without a length: 2
                stray += skip
                if stray > 1 << 16:
                    return
                f.seek(skip - 4, 1)
                continue
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
        orientation, palette = None, None
        for name, data in _file_chunks(f, kind):
            # the first EXIF block with an Orientation, as OpenCV reads it (the last one was read: a JPEG with two
            # was turned as the second said here, as the first in read_rgb)
            if name in (b'eXIf', b'EXIF') and orientation is None:
                orientation = _exif_tiff_orientation(data)
            elif name == b'PLTE':
                palette = [tuple(data[i:i + 3]) for i in range(0, len(data) - 2, 3)]
            elif name == 0xE1 and data[:6] == b'Exif\x00\x00' and orientation is None:
                orientation = _exif_tiff_orientation(data[6:])
    return height, width, orientation or 1, palette


def file_image_hw(path) -> tuple[int, int]:
    """(height, width) of an image file as displayed (and as ``read_rgb`` reads it): EXIF orientations 5..8
    turn it by 90 degrees. From the headers, without decoding (``image_file_info``); inside
    :func:`sizes_read_once`, each file's header once."""
    known = _SIZES.get()
    if known is None:
        return _displayed_hw(path)
    key = os.fspath(path)
    if key not in known:
        known[key] = _displayed_hw(path)
    return known[key]


def _displayed_hw(path) -> tuple[int, int]:
    height, width, orientation, _ = image_file_info(path)
    return (width, height) if orientation >= 5 else (height, width)


_SIZES: ContextVar[dict | None] = ContextVar('image_sizes', default=None)


@contextlib.contextmanager
def sizes_read_once():
    """Within it (this thread), :func:`file_image_hw` reads each file's header once: a command's passes over a
    dataset's files (the pixel-limit check, then the frame sizes ``propagate`` cuts sequences at) read every
    frame's header twice. For a planning step only: a file replaced inside it keeps its first size."""
    token = _SIZES.set({})
    try:
        yield
    finally:
        _SIZES.reset(token)
