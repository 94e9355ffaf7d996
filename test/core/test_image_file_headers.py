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

from vidseg_ros.data.image_headers import file_image_hw, image_file_info
from vidseg_ros.data.images import ImageError, read_label_pixels, read_rgb

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


def _gif(width: int, height: int) -> bytes:
    """A GIF whose logical screen is width x height (what OpenCV decodes to), one 1x1 frame in it."""
    return (b'GIF89a' + struct.pack('<HHBBB', width, height, 0x80, 0, 0) + bytes(6)
            + b',' + struct.pack('<HHHHB', 0, 0, 1, 1, 0) + b'\x02\x02\x44\x01\x00' + b';')


def _pam(width: int, height: int, pixels: bytes = b'') -> bytes:
    return b'P7\nWIDTH %d\nHEIGHT %d\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n' % (width, height) + pixels


def _j2k(width: int, height: int) -> bytes:
    """The start of a JPEG 2000 codestream: SOC, then SIZ with the image's size (one 8-bit component)."""
    return (b'\xff\x4f\xff\x51' + struct.pack('>HH4I4IH', 41, 0, width, height, 0, 0, width, height, 0, 0, 1)
            + b'\x07\x01\x01' + b'\xff\xd9')


def _jp2(codestream: bytes, header_hw=(1, 1)) -> bytes:
    """A JP2 file around ``codestream``: its ihdr box says ``header_hw``, which the decoder does not go by."""
    ihdr = struct.pack('>I4sIIHBBBB', 22, b'ihdr', *header_hw, 1, 7, 7, 0, 0)
    return (b'\x00\x00\x00\x0cjP  \r\n\x87\n' + struct.pack('>I4s4sI4s', 20, b'ftyp', b'jp2 ', 0, b'jp2 ')
            + struct.pack('>I4s', 8 + len(ihdr), b'jp2h') + ihdr + struct.pack('>I4s', 8 + len(codestream), b'jp2c')
            + codestream)


@pytest.mark.parametrize('data', [_gif(20000, 20000), _pam(20000, 20000), _j2k(20000, 20000),
                                  _jp2(_j2k(20000, 20000))], ids=['gif', 'pam', 'j2k', 'jp2'])
def test_gif_pam_and_jpeg_2000_bombs_are_refused_from_their_headers(tmp_path, monkeypatch, data):
    """Any format but PNG/JPEG/WebP/BMP/TIFF/PNM was decoded whole to learn its size: a 1.4 KB JPEG 2000 of
    20000x20000 (read_frame, label-import's size check) peaked at 1.9 GB for 6 s, a 296 KB GIF at 3.0 GB for 15 s,
    before the one-line refusal. The name says .png: OpenCV goes by the content."""
    from vidseg_ros.data.video import read_frame
    path = tmp_path / 'frame.png'
    path.write_bytes(data)
    _no_decoding(monkeypatch)
    assert file_image_hw(path) == (20000, 20000)
    with pytest.raises(ImageError, match='20000x20000 = 400000000 pixels exceeds max_input_pixels'):
        read_frame(path)


def test_label_import_sizes_a_jpeg_2000_label_without_decoding_it(tmp_path, monkeypatch):
    """label-import compared a label's size with its frame's by decoding it (1.4 KB -> 2.0 GB peak, 5.5 s)."""
    from vidseg_ros.data.datasets.label_import import import_labels
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
    (tmp_path / 'ds').mkdir()
    frame = tmp_path / 'ds' / '0.png'
    cv2.imwrite(str(frame), np.zeros((24, 32, 3), np.uint8))
    write_index(tmp_path / 'ds', [FrameRecord('s', 0, frame, None, 1000)])
    (tmp_path / 'lab').mkdir()
    (tmp_path / 'lab' / '1000.png').write_bytes(_jp2(_j2k(20000, 20000)))
    _no_decoding(monkeypatch)
    with pytest.raises(ValueError, match='is 20000x20000 but its frame .* is 32x24'):
        import_labels(tmp_path / 'ds', tmp_path / 'lab', class_names=['a', 'b'])


def test_gif_pam_and_jpeg_2000_header_sizes_are_the_decoded_sizes(tmp_path):
    """Read from the codestream, as the decoder does: a JP2 header box saying another size is not believed."""
    from vidseg_ros.data.images import read_rgb
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    files = {'a.gif': _gif(40, 30), 'b.pam': _pam(32, 24, rgb.tobytes())}
    ok, j2k = cv2.imencode('.jp2', np.zeros((64, 80), np.uint8))
    if ok:       # an OpenCV with OpenJPEG
        files['c.jp2'] = j2k.tobytes()
        at = files['c.jp2'].index(b'jp2c') + 4
        files['d.j2k'] = files['c.jp2'][at:]      # a bare grey codestream: OpenCV's IMREAD_COLOR refused it
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert file_image_hw(tmp_path / name) == read_rgb(tmp_path / name).shape[:2], name
    if ok:      # a header box of another size: the codestream's is the one sized, and OpenJPEG refuses the file
        (tmp_path / 'e.jp2').write_bytes(_jp2(files['d.j2k'], header_hw=(7, 9)))
        assert file_image_hw(tmp_path / 'e.jp2') == (64, 80)
        with pytest.raises(ImageError, match='cannot read image file'):
            read_rgb(tmp_path / 'e.jp2')


def test_a_pam_reads_in_rgb_order_as_a_ppm_does(tmp_path):
    """OpenCV keeps a PAM's samples in file order and calls them BGR: a netpbm / ImageMagick PAM (TUPLTYPE RGB)
    came out with red and blue swapped, unlike the same pixels as a PPM; a PAM OpenCV wrote reads back as written."""
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    (tmp_path / 'f.pam').write_bytes(_pam(32, 24, rgb.tobytes()))
    (tmp_path / 'f.ppm').write_bytes(b'P6\n32 24\n255\n' + rgb.tobytes())
    assert cv2.imwrite(str(tmp_path / 'cv.pam'), rgb[:, :, ::-1])   # OpenCV writes B, G, R and no TUPLTYPE
    for name in ('f.ppm', 'f.pam', 'cv.pam'):
        assert np.array_equal(read_rgb(tmp_path / name), rgb), name
        assert np.array_equal(read_label_pixels(tmp_path / name)[0], rgb[:, :, ::-1]), name     # BGR, as OpenCV's


_FLOAT = np.linspace(0, 1, 24 * 32 * 3, dtype=np.float32).reshape(24, 32, 3)


@pytest.mark.parametrize('ext, name', [('.pfm', 'PFM'), ('.hdr', 'Radiance HDR'), ('.ras', 'Sun raster')])
def test_formats_not_read_are_one_line_naming_them_and_those_read(tmp_path, ext, name):
    """OpenCV decodes these, so read_rgb took them: a PFM of 0..1 came out as 0s and 1s (garbage), and each was decoded
    whole to learn its size (an RLE-packed HDR of 20000x20000: 9.2 GB peak, 35 s). They are refused by name."""
    from vidseg_ros.data.video import read_frame
    path = tmp_path / f'frame{ext}'
    assert cv2.imwrite(str(path), _FLOAT if ext != '.ras' else (_FLOAT * 255).astype(np.uint8))
    for read in (read_rgb, read_frame, read_label_pixels, file_image_hw):
        with pytest.raises(ImageError, match=f'cannot read image file .*{ext}: a {name} .*image, a format not read: '
                                             'convert it to one of PNG, JPEG, .*GIF or JPEG 2000') as e:
            read(path)
        assert '\n' not in str(e.value)


@pytest.mark.parametrize('data, match', [(b'', 'the file is empty'), (b'not an image', r"it starts with b'not an i'"),
                                         (b'\x00\x00\x00\x1cftypavif' + bytes(20), "brand b'avif'")])
def test_what_is_not_an_image_file_says_so(tmp_path, data, match):
    (tmp_path / 'f.png').write_bytes(data)
    for read in (read_rgb, file_image_hw):
        with pytest.raises(ImageError, match=match):
            read(tmp_path / 'f.png')


def test_a_jpeg_with_bytes_before_a_marker_is_sized_and_decoded_as_libjpeg_does(tmp_path, monkeypatch):
    """libjpeg skips stray bytes before a marker (a warning) and decodes the image; the header reader said 'corrupt
    JPEG: no marker at byte 20': a CompressedImage of it was refused by the node, and a file was decoded to size it."""
    from vidseg_ros.data.images import decode_compressed
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    data = cv2.imencode('.jpg', rgb)[1].tobytes()
    at = data.index(b'\xff\xdb')
    data = data[:at] + b'\x00\x12\x34' + data[at:]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (24, 32, 3)
    assert decode_compressed('jpeg', data).shape == (24, 32, 3)
    (tmp_path / 'f.jpg').write_bytes(data)
    _no_decoding(monkeypatch)
    assert file_image_hw(tmp_path / 'f.jpg') == (24, 32)


@pytest.mark.parametrize('maxval', [1, 100, 1023, 4095])
def test_a_pnm_frame_is_read_by_its_maxval_and_a_label_keeps_its_values(tmp_path, maxval):
    """OpenCV takes a PGM's maxval other than 255 / 65535 as its depth's full scale: a 10-bit PGM (maxval 1023) read
    as a frame was black (0..3), one of maxval 100 dark (0..100 of 255). Frames are scaled by the maxval, as the
    format defines; label pixels keep the stored values (ids). OpenCV also read a PAM of MAXVAL 1 as all 0s and did
    not read a 16-bit one without a TUPLTYPE."""
    values = (np.arange(24 * 32).reshape(24, 32) % (maxval + 1)).astype(np.uint16)
    data = values.astype('>u2' if maxval > 255 else 'u1').tobytes()
    for name, header in (('f.pgm', b'P5\n32 24\n%d\n' % maxval),
                         ('f.pam', b'P7\nWIDTH 32\nHEIGHT 24\nDEPTH 1\nMAXVAL %d\nENDHDR\n' % maxval)):
        (tmp_path / name).write_bytes(header + data)
        rgb = read_rgb(tmp_path / name)
        expected = np.rint(values * (255 / maxval)).astype(np.uint8)
        assert np.abs(rgb.astype(int) - expected[:, :, None]).max() <= 1, name
        assert np.array_equal(read_label_pixels(tmp_path / name)[0], values), name


def _exif_orientation(end: str, kind: int, value: int) -> bytes:
    """An EXIF (TIFF) block whose first IFD holds one Orientation entry typed ``kind`` (SHORT 3, LONG 4, BYTE 1)."""
    field = struct.pack(end + 'HH', value, 0) if kind == 3 else struct.pack(end + 'I', value) if kind == 4 \
        else bytes([value, 0, 0, 0])
    return ((b'II' if end == '<' else b'MM') + struct.pack(end + 'HIH', 42, 8, 1)
            + struct.pack(end + 'HHI', 0x112, kind, 1) + field + struct.pack(end + 'I', 0))


@pytest.mark.parametrize('end', ['<', '>'])
@pytest.mark.parametrize('kind', [3, 4, 1])
def test_a_jpeg_orientation_of_any_type_is_read_as_opencv_reads_it(tmp_path, end, kind):
    """OpenCV reads a SHORT at the Orientation's value field whatever its type: a little-endian LONG or BYTE 6
    turned the frame (read_rgb) while its size and its label (read as stored, then turned by this tag) were not
    turned: 8x16 against a 16x8 frame, and a square label would have been silently off by a quarter turn."""
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = 255
    jpg = cv2.imencode('.jpg', rgb)[1].tobytes()
    app1 = b'Exif\x00\x00' + _exif_orientation(end, kind, 6)
    path = tmp_path / 'f.jpg'
    path.write_bytes(jpg[:2] + b'\xff\xe1' + struct.pack('>H', len(app1) + 2) + app1 + jpg[2:])
    frame = read_rgb(path)
    label, _ = read_label_pixels(path)
    assert file_image_hw(path) == frame.shape[:2] == label.shape[:2]
    assert np.array_equal(label[:, :, ::-1] > 127, frame > 127)


def _jpeg_with(before_exif: bytes, at: int = 2) -> bytes:
    """A 16x8 JPEG (left half white) with an EXIF Orientation 6 segment, ``before_exif`` bytes in front of it."""
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = 255
    jpg = cv2.imencode('.jpg', rgb)[1].tobytes()
    app1 = b'Exif\x00\x00' + _exif_orientation('<', 3, 6)
    return jpg[:at] + before_exif + b'\xff\xe1' + struct.pack('>H', len(app1) + 2) + app1 + jpg[at:]


@pytest.mark.parametrize('bogus', [b'\xff\xe5\x00\x01', b'\xff\xfe\x00\x00'], ids=['app5_length_1', 'com_length_0'])
def test_a_segment_length_below_2_is_read_past_as_libjpeg_does(tmp_path, bogus):
    """libjpeg reads on after a length word below 2 (it counts no byte after itself): OpenCV decoded the frame and
    turned it by the EXIF block after it, but the header walk ended there: 'no frame header (SOF)', so the size
    check refused a frame read_rgb reads, and upright_bytes kept the tag it had not seen."""
    from vidseg_ros.data.exif import upright_bytes
    from vidseg_ros.data.image_headers import compressed_size
    data = _jpeg_with(bogus)
    path = tmp_path / 'f.jpg'
    path.write_bytes(data)
    assert cv2.imread(str(path)).shape[:2] == (16, 8)     # OpenCV's reading, the reference
    assert compressed_size(data) == ('jpeg', 8, 16)
    assert file_image_hw(path) == read_rgb(path).shape[:2] == read_label_pixels(path)[0].shape[:2] == (16, 8)
    assert upright_bytes(data)[1:] == (6, True)


def test_stray_bytes_before_an_exif_block_are_skipped_as_libjpeg_does(tmp_path):
    """Two stray bytes between the JFIF and EXIF segments: libjpeg skips them ('2 extraneous bytes before marker')
    and OpenCV turned the frame to 16x8, but the size (file_image_hw) and the label stopped reading there: 8x16."""
    plain = cv2.imencode('.jpg', np.zeros((8, 16, 3), np.uint8))[1].tobytes()
    assert plain[2:4] == b'\xff\xe0'      # OpenCV's JPEGs open with a JFIF APP0 segment
    app0_end = 4 + struct.unpack('>H', plain[4:6])[0]
    path = tmp_path / 'f.jpg'
    path.write_bytes(_jpeg_with(b'\x00\x11', at=app0_end))
    assert cv2.imread(str(path)).shape[:2] == (16, 8)     # OpenCV's reading, the reference
    assert file_image_hw(path) == read_rgb(path).shape[:2] == read_label_pixels(path)[0].shape[:2] == (16, 8)


def _app1(tiff: bytes) -> bytes:
    return b'\xff\xe1' + struct.pack('>H', len(tiff) + 8) + b'Exif\x00\x00' + tiff


_NO_ORIENTATION = b'II*\x00' + struct.pack('<IH', 8, 1) + struct.pack('<HHIHH', 0x10f, 3, 1, 5, 0) + bytes(4)


@pytest.mark.parametrize('first, second', [
    (_exif_orientation('<', 3, 6), _exif_orientation('<', 3, 1)),
    (_exif_orientation('<', 3, 1), _exif_orientation('<', 3, 6)),
    (_exif_orientation('<', 3, 0), _exif_orientation('<', 3, 6)),      # the first entry counts, even invalid
    (b'II*\x00' + struct.pack('<I', 1000), _exif_orientation('<', 3, 6)),   # a damaged block: the next one
    (_NO_ORIENTATION, _exif_orientation('<', 3, 6)),
], ids=['6_then_1', '1_then_6', '0_then_6', 'damaged_then_6', 'none_then_6'])
def test_two_exif_blocks_are_read_as_opencv_reads_them(tmp_path, first, second):
    """OpenCV goes by the first Orientation entry it finds; the last EXIF block was read here: a frame turned by
    read_rgb was sized, and its label turned, by the other block."""
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, :8] = 255
    jpg = cv2.imencode('.jpg', rgb)[1].tobytes()
    path = tmp_path / 'f.jpg'
    path.write_bytes(jpg[:2] + _app1(first) + _app1(second) + jpg[2:])
    shown = cv2.imread(str(path))     # OpenCV's reading, the reference
    label, _ = read_label_pixels(path)
    assert file_image_hw(path) == shown.shape[:2] == label.shape[:2]
    assert np.array_equal(label > 127, shown > 127)


@pytest.mark.parametrize('box', ['xl_jp2c', 'xl_jp2h', 'last_box_length_0'])
def test_jp2_box_lengths_of_every_form_are_followed(tmp_path, box):
    """A box length of 1 (64-bit length after the name) and 0 (the box runs to the end of the file) are both valid
    JP2: the codestream is still found and sized as OpenJPEG decodes it."""
    ok, jp2 = cv2.imencode('.jp2', np.random.default_rng(0).integers(0, 256, (64, 80, 3), np.uint8))
    if not ok:
        pytest.skip('this OpenCV has no JPEG 2000 encoder')
    jp2 = jp2.tobytes()
    name = b'jp2h' if box == 'xl_jp2h' else b'jp2c'
    at = jp2.index(name) - 4
    (length,) = struct.unpack('>I', jp2[at:at + 4])
    head = struct.pack('>I4s', 0, name) if box == 'last_box_length_0' else struct.pack('>I4sQ', 1, name, length + 8)
    path = tmp_path / 'f.jp2'
    path.write_bytes(jp2[:at] + head + jp2[at + 8:])
    assert file_image_hw(path) == read_rgb(path).shape[:2] == (64, 80)
