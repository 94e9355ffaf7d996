"""TIFF and PNM (PBM/PGM/PPM) files are sized from their headers, as PNG, JPEG, WebP and BMP are: before, any
format but those four was decoded whole to learn its size, so a 976 KB TIFF of 20000x20000 was refused as over
MAX_INPUT_PIXELS only after an 811 MB peak."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg_ros.data.images import ImageError, file_image_hw, image_file_info, read_label_pixels, read_rgb

REPO = Path(__file__).resolve().parents[2]


def _no_decoding(monkeypatch):
    monkeypatch.setattr(cv2, 'imread', lambda *a, **k: pytest.fail('decoded to learn the size'))


@pytest.mark.parametrize('ext, shape', [('.tif', (24, 32)), ('.tif', (24, 32, 3)), ('.tiff', (70000, 2)),
                                        ('.pgm', (24, 32)), ('.ppm', (24, 32, 3)), ('.pbm', (24, 32)),
                                        ('.pnm', (70000, 2))])
def test_files_opencv_writes_are_sized_from_their_headers(tmp_path, monkeypatch, ext, shape):
    path = tmp_path / f'frame{ext}'
    assert cv2.imwrite(str(path), np.zeros(shape, np.uint8))
    _no_decoding(monkeypatch)
    assert image_file_info(path) == (*shape[:2], 1, None)
    assert file_image_hw(path) == shape[:2]


def test_a_16_bit_and_a_plain_text_file_are_sized(tmp_path, monkeypatch):
    assert cv2.imwrite(str(tmp_path / 'depth.tif'), np.zeros((24, 32), np.uint16))
    assert cv2.imwrite(str(tmp_path / 'depth.pgm'), np.zeros((24, 32), np.uint16))
    assert cv2.imwrite(str(tmp_path / 'plain.pgm'), np.zeros((24, 32), np.uint8), [cv2.IMWRITE_PXM_BINARY, 0])
    (tmp_path / 'comments.ppm').write_bytes(b'P3\n# made by hand\n# 1 1\n32 # width\n24\n255\n' + b'0 ' * 2304)
    _no_decoding(monkeypatch)
    for name in ('depth.tif', 'depth.pgm', 'plain.pgm', 'comments.ppm'):
        assert image_file_info(tmp_path / name) == (24, 32, 1, None), name


def _tiff(width: int, height: int, end: str = '<', kind: int = 3, strip: bytes = b'', compression: int = 1,
          orientation: int | None = None) -> bytes:
    """A one-strip 8-bit grey TIFF whose ImageWidth and ImageLength are SHORT (3) or LONG (4), its directory
    after the pixels (as libtiff writes it), with an Orientation tag if given."""
    def entry(tag, typ, value):
        field = struct.pack(end + 'HH', value, 0) if typ == 3 else struct.pack(end + 'I', value)
        return struct.pack(end + 'HHI', tag, typ, 1) + field
    ifd_at = 8 + len(strip) + (len(strip) & 1)
    entries = [entry(256, kind, width), entry(257, kind, height), entry(258, 3, 8), entry(259, 3, compression),
               entry(262, 3, 1), entry(273, 4, 8), entry(277, 3, 1), entry(278, 4, height),
               entry(279, 4, len(strip))]
    if orientation is not None:
        entries.insert(6, entry(274, 3, orientation))
    magic = b'II*\x00' if end == '<' else b'MM\x00*'
    return (magic + struct.pack(end + 'I', ifd_at) + strip + bytes(len(strip) & 1)
            + struct.pack(end + 'H', len(entries)) + b''.join(entries) + bytes(4))


def _bigtiff(width: int, height: int) -> bytes:
    entries = [struct.pack('<HHQQ', 256, 16, 1, width), struct.pack('<HHQ', 257, 3, 1) + struct.pack('<H', height)
               + bytes(6)]
    return b'II+\x00' + struct.pack('<HHQ', 8, 0, 16) + struct.pack('<Q', 2) + b''.join(entries) + bytes(8)


@pytest.mark.parametrize('end', ['<', '>'])
@pytest.mark.parametrize('kind', [3, 4])
def test_crafted_tiffs_of_either_byte_order_and_field_type(tmp_path, monkeypatch, end, kind):
    path = tmp_path / 'f.tif'
    path.write_bytes(_tiff(320, 240, end, kind, bytes(320 * 240)))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (240, 320)       # a TIFF OpenCV reads
    _no_decoding(monkeypatch)
    assert image_file_info(path) == (240, 320, 1, None)


def test_a_bigtiff_is_sized(tmp_path, monkeypatch):
    (tmp_path / 'f.tif').write_bytes(_bigtiff(70000, 300))
    _no_decoding(monkeypatch)
    assert image_file_info(tmp_path / 'f.tif') == (300, 70000, 1, None)


@pytest.mark.parametrize('data, match', [
    (b'II*\x00', 'truncated TIFF header'),
    (b'II*\x00' + struct.pack('<I', 10**6), 'past the end of the file'),
    (b'MM\x00*' + struct.pack('>IH', 8, 1) + struct.pack('>HHII', 258, 3, 1, 8), 'no ImageWidth and ImageLength'),
    # a classic TIFF's width typed LONG8 (BigTIFF only) in its last entry: struct.error, which no caller catches
    (b'II*\x00' + struct.pack('<IH', 8, 2) + struct.pack('<HHII', 257, 3, 1, 10) + struct.pack('<HHII', 256, 16, 1, 20),
     'no ImageWidth and ImageLength'),
    (b'P6\n', r'corrupt P6 \(PNM\) header'),
    (b'P5\n32 x\n255\n', r'corrupt P5 \(PNM\) header'),
    (b'P2\n# a comment without its end', r'corrupt P2 \(PNM\) header'),
])
def test_a_damaged_header_is_one_clear_image_error(tmp_path, data, match):
    path = tmp_path / 'f.img'
    path.write_bytes(data)
    with pytest.raises(ImageError, match=match) as e:
        image_file_info(path)
    assert '\n' not in str(e.value)


def test_a_tiff_bomb_is_refused_from_its_header_without_decoding(tmp_path):
    """A 20000x20000 deflated TIFF of zeros (~400 KB): OpenCV decoded it to learn its size (811 MB peak)."""
    z = zlib.compressobj(9)
    row = bytes(20000)
    strip = b''.join(z.compress(row) for _ in range(20000)) + z.flush()
    path = tmp_path / 'bomb.tif'
    path.write_bytes(_tiff(20000, 20000, strip=strip, compression=8))
    assert path.stat().st_size < 1 << 20
    # in a fresh process: ru_maxrss is the process's peak, which this one may have passed already
    code = ('import resource, sys\n'
            'from vidseg_ros.data import video\n'
            'before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
            'try:\n'
            '    video.read_frame(sys.argv[1])\n'
            'except video.ImageError as e:\n'
            '    print(e)\n'
            'print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    out = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.splitlines()
    assert '20000x20000 = 400000000 pixels exceeds max_input_pixels' in out[0], out
    assert int(out[-1]) < 50 << 10, f'peak grew by {int(out[-1]) >> 10} MiB'      # KiB


# stored -> as displayed, for each TIFF/EXIF Orientation (the TIFF 6.0 definitions; independent of images.orient)
_SHOWN = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: np.transpose,
          6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize('orientation', range(1, 9))
def test_a_tiff_is_sized_and_read_as_displayed_by_its_orientation_tag(tmp_path, orientation):
    """image_file_info said orientation 1 for every TIFF: file_image_hw gave a TIFF with Orientation 5..8 its stored
    size, and OpenCV does not read such a TIFF at all (read_rgb: 'cannot read image file'), while it turns one of
    2..4 in every mode: the one rule (as displayed) now holds for TIFFs too, for frames and labels."""
    from vidseg_ros.data.video import read_frame
    stored = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    path = tmp_path / 'f.tif'
    path.write_bytes(_tiff(32, 24, strip=stored.tobytes(), orientation=orientation))
    shown = _SHOWN[orientation](stored)
    assert image_file_info(path)[2] == orientation
    assert file_image_hw(path) == shown.shape
    for rgb in (read_rgb(path), read_frame(path)):
        assert np.array_equal(rgb, np.repeat(shown[:, :, None], 3, axis=2))
    label, _ = read_label_pixels(path)
    assert np.array_equal(label, shown)


def test_a_tiff_orientation_typed_long_and_a_big_endian_one(tmp_path):
    """libtiff takes an Orientation typed LONG as well as SHORT, in either byte order."""
    stored = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    for end in ('<', '>'):
        data = bytearray(_tiff(32, 24, end=end, strip=stored.tobytes(), orientation=6))
        at = data.index(struct.pack(end + 'HH', 274, 3))
        data[at:at + 12] = struct.pack(end + 'HHII', 274, 4, 1, 6)
        (tmp_path / 'f.tif').write_bytes(bytes(data))
        assert file_image_hw(tmp_path / 'f.tif') == (32, 24)
        assert np.array_equal(read_rgb(tmp_path / 'f.tif')[:, :, 1], np.rot90(stored, -1))
