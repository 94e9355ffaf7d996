"""CompressedImage formats beyond PNG and JPEG: WebP (VP8, VP8L, VP8X) and BMP have their size read from the header
before any decoding, as PNG and JPEG do, so a small file claiming a huge image is refused for nothing; other
formats OpenCV decodes (TIFF, GIF, PNM) are refused, naming what is supported. Before, every WebP frame was
refused ('neither PNG nor JPEG'): the node dropped a WebP camera and extract failed on its bags."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vidseg_ros.data.image_headers import COMPRESSED_KINDS, compressed_size, file_image_hw, image_file_info
from vidseg_ros.data.images import ImageError, decode_compressed, read_label_pixels, read_rgb

MAX_PIXELS = 4096
IMG = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)        # BGR, as OpenCV writes it
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _exif(orientation: int) -> np.ndarray:
    """An EXIF (TIFF) block holding only an Orientation tag."""
    tiff = b'II*\x00' + struct.pack('<IH', 8, 1) + struct.pack('<HHIHH', 0x112, 3, 1, orientation, 0) + bytes(4)
    return np.frombuffer(tiff, np.uint8)


def _encoded(kind: str, img: np.ndarray = IMG) -> bytes:
    """``img`` as a file of ``kind``: webp-vp8l (lossless), webp-vp8 (lossy), webp-vp8x (extended: with EXIF),
    bmp (24-bit), bmp-bgra (32-bit), bmp-grey (8-bit with a palette), bmp-top-down (negative height)."""
    if kind == 'webp-vp8l':
        return cv2.imencode('.webp', img)[1].tobytes()
    if kind == 'webp-vp8':
        return cv2.imencode('.webp', img, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    if kind == 'webp-vp8x':
        return cv2.imencodeWithMetadata('.webp', img, [cv2.IMAGE_METADATA_EXIF], [_exif(1)])[1].tobytes()
    if kind == 'bmp-bgra':
        return cv2.imencode('.bmp', np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]))[1].tobytes()
    if kind == 'bmp-grey':
        return cv2.imencode('.bmp', img[:, :, 0])[1].tobytes()
    data = bytearray(cv2.imencode('.bmp', img)[1].tobytes())
    if kind == 'bmp-top-down':
        (offset,) = struct.unpack('<I', data[10:14])
        struct.pack_into('<i', data, 22, -img.shape[0])
        data[offset:] = img.reshape(img.shape[0], -1).tobytes()          # rows top first (16 * 3: no padding)
    return bytes(data)


KINDS = ['webp-vp8l', 'webp-vp8', 'webp-vp8x', 'bmp', 'bmp-bgra', 'bmp-grey', 'bmp-top-down']


@pytest.mark.parametrize('kind', KINDS)
def test_webp_and_bmp_decode_to_their_pixels_sized_from_the_header(kind):
    data = _encoded(kind)
    assert data[12:16] == {'webp-vp8l': b'VP8L', 'webp-vp8': b'VP8 ', 'webp-vp8x': b'VP8X'}.get(kind, data[12:16])
    assert compressed_size(data) == (kind.split('-')[0], 12, 16)
    rgb = decode_compressed('webp' if kind.startswith('webp') else 'bmp', data, max_pixels=MAX_PIXELS)
    assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8
    want = np.repeat(IMG[:, :, :1], 3, axis=2) if kind == 'bmp-grey' else IMG[:, :, ::-1]
    if kind == 'webp-vp8':          # lossy: the pixels OpenCV decodes
        want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(rgb, want)


def test_an_os2_bitmap_core_header_gives_its_16_bit_size():
    dib = struct.pack('<IHHHH', 12, 300, 200, 1, 24)
    assert compressed_size(b'BM' + struct.pack('<IHHI', 26, 0, 0, 26) + dib) == ('bmp', 200, 300)


def _claiming(kind: str, height: int, width: int) -> bytes:
    """A real file of ``kind`` whose header claims ``height`` x ``width``."""
    data = bytearray(_encoded(kind))
    if kind == 'webp-vp8l':
        struct.pack_into('<I', data, 21, (width - 1) | (height - 1) << 14 | (data[24] >> 4) << 28)
    elif kind == 'webp-vp8':
        struct.pack_into('<HH', data, 26, width, height)
    elif kind == 'webp-vp8x':
        data[24:30] = (width - 1).to_bytes(3, 'little') + (height - 1).to_bytes(3, 'little')
    else:
        struct.pack_into('<ii', data, 18, width, height)
    return bytes(data)


@pytest.mark.parametrize('kind, height, width', [
    ('webp-vp8l', 16384, 16384), ('webp-vp8', 16383, 16383), ('webp-vp8x', 1 << 24, 1 << 24),
    ('bmp', 100_000, 100_000), ('bmp-top-down', -100_000, 100_000)])
def test_a_header_claiming_a_huge_image_is_refused_before_decoding(kind, height, width, monkeypatch):
    data = _claiming(kind, height, width)
    assert compressed_size(data)[1:] == (abs(height), width)

    def no_decoding(*args):
        raise AssertionError('decoded')
    monkeypatch.setattr(cv2, 'imdecode', no_decoding)
    with pytest.raises(ImageError, match=f'{width}x{abs(height)} = {abs(height) * width} pixels exceeds '
                                         f'max_input_pixels {MAX_PIXELS}'):
        decode_compressed('webp', data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize('kind', KINDS)
def test_every_truncation_is_an_image_error_or_the_right_size(kind):
    data = _encoded(kind)
    for n in range(len(data)):
        try:
            assert compressed_size(data[:n]) == (kind.split('-')[0], 12, 16)
        except ImageError as e:
            assert str(e)
        try:
            assert decode_compressed('x', data[:n], max_pixels=MAX_PIXELS).shape == (12, 16, 3)
        except ImageError as e:
            assert str(e)


@pytest.mark.parametrize('data, why', [
    (b'BM' + bytes(12) + struct.pack('<I', 20) + bytes(20), 'a 20-byte DIB header'),
    (b'BM' + bytes(12) + struct.pack('<Iii', 40, -5, 5), 'negative width -5'),
    (b'RIFF\x10\x00\x00\x00WAVEfmt ', 'a RIFF file but not WebP'),
    (b'RIFF\x10\x00\x00\x00WEBPANIM' + bytes(20), "first chunk b'ANIM' is not VP8, VP8L or VP8X"),
    (b'RIFF\x10\x00\x00\x00WEBPVP8 ' + bytes(20), 'no VP8 start code'),
    (b'RIFF\x10\x00\x00\x00WEBPVP8L' + bytes(20), 'no VP8L signature'),
])
def test_a_malformed_header_says_what_is_wrong(data, why):
    with pytest.raises(ImageError, match=why):
        compressed_size(data)


@pytest.mark.parametrize('ext', ['.tiff', '.gif', '.ppm', '.pam'])
def test_formats_whose_size_is_not_read_first_are_refused_naming_the_supported(ext):
    # TIFF also because OpenCV turns it by its Orientation tag even unchanged: the header's size is not the decoded
    data = cv2.imencode(ext, IMG)[1].tobytes()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(ImageError, match='compressed data is not PNG, JPEG, WebP or BMP'):
        decode_compressed(ext[1:], data)
    assert COMPRESSED_KINDS == ('png', 'jpeg', 'webp', 'bmp')


def _mutated(draw) -> bytes:
    """A real WebP or BMP with bytes flipped and cut, or a header claiming another size."""
    kind = draw(st.sampled_from(KINDS))
    data = bytearray(_encoded(kind) if draw(st.booleans()) else
                     _claiming(kind, draw(st.integers(1, 1 << 14)), draw(st.integers(1, 1 << 14))))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, min(len(data), 64) - 1))] = draw(st.integers(0, 255))    # mostly the header
    return bytes(data[:draw(st.integers(0, len(data)))])


compressed = st.one_of(
    st.composite(_mutated)(),
    st.builds(lambda head, tail: head + tail, st.sampled_from(
        [b'RIFF\0\0\0\0WEBPVP8 ', b'RIFF\0\0\0\0WEBPVP8L', b'RIFF\0\0\0\0WEBPVP8X', b'BM']), st.binary(max_size=80)),
)


@SETTINGS
@given(data=compressed)
def test_any_webp_or_bmp_bytes_give_rgb8_within_the_limit_or_an_image_error(data):
    try:
        kind, height, width = compressed_size(data)
        assert kind in ('webp', 'bmp') and height >= 0 and width >= 0
    except ImageError as e:
        assert str(e)
    try:
        rgb = decode_compressed('webp', data, max_pixels=MAX_PIXELS)
    except ImageError as e:
        assert str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS


def test_a_webp_file_is_sized_and_turned_as_displayed_like_a_jpeg(tmp_path):
    # a WebP frame or label with an EXIF orientation: read_rgb (cv2.imread) turns it, so its size as displayed
    # and its label's pixels must be turned too (the header gave 12x16 with orientation 1: frame and label
    # disagreed by a quarter turn)
    path = tmp_path / 'frame.webp'
    path.write_bytes(cv2.imencodeWithMetadata('.webp', IMG, [cv2.IMAGE_METADATA_EXIF], [_exif(6)])[1].tobytes())
    assert read_rgb(path).shape[:2] == (16, 12)
    assert image_file_info(path) == (12, 16, 6, None)
    assert file_image_hw(path) == (16, 12)
    label, _ = read_label_pixels(path)
    np.testing.assert_array_equal(label, read_rgb(path)[:, :, ::-1])


def test_a_bmp_file_is_sized_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / 'frame.bmp'
    path.write_bytes(_encoded('bmp'))
    monkeypatch.setattr(cv2, 'imread', lambda *a: pytest.fail('decoded'))
    assert image_file_info(path) == (12, 16, 1, None)


def _compressed_bag(path, payloads: list[tuple[str, bytes]]):
    """A bag of CompressedImage messages (format, bytes) on /cam/image/compressed, one per 0.1 s."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from support.bags import TS
    T, name = TS.types, 'sensor_msgs/msg/CompressedImage'
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conn = w.add_connection('/cam/image/compressed', name, typestore=TS)
    for i, (fmt, data) in enumerate(payloads):
        ns = (i + 1) * 10**8
        header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=0, nanosec=ns), frame_id='cam')
        w.write(conn, ns, TS.serialize_cdr(T[name](header=header, format=fmt, data=np.frombuffer(data, np.uint8)),
                                           name))
    w.close()
    return path


def _frames(i: int) -> np.ndarray:
    img = np.random.default_rng(i).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    img[0, 0] = i
    return img


@pytest.mark.parametrize('image_format', ['png', 'keep'])
@pytest.mark.parametrize('kind', ['webp-vp8l', 'webp-vp8x', 'bmp'])
def test_extract_writes_webp_and_bmp_frames_as_the_node_decodes_them(tmp_path, kind, image_format):
    # keep writes PNG / JPEG bytes as recorded; another format is written as PNG of what the node decodes (a WebP's
    # EXIF orientation, which file readers apply, is not reset in place; before, the WebP bytes went to a .jpg)
    from vidseg_ros.data.datasets.extract import ExtractConfig, extract
    from vidseg_ros.data.datasets.layouts import read_index
    payloads = [(kind.split('-')[0], _encoded(kind, _frames(i))) for i in range(4)]
    res = extract([_compressed_bag(tmp_path / 'bag', payloads)], tmp_path / 'out',
                  ExtractConfig(image_format=image_format))
    assert res.written == 4 and not res.failed
    rows = read_index(tmp_path / 'out')
    assert len({r.sequence for r in rows}) == 1       # the size read from each header: no frame starts a sequence
    for r, (fmt, data) in zip(rows, payloads):
        assert r.image.suffix == '.png' and r.encoding == fmt
        np.testing.assert_array_equal(read_rgb(r.image), decode_compressed(fmt, data))


def test_kept_bytes_that_are_no_image_are_failed_frames_not_files(tmp_path):
    # --image-format keep wrote any CompressedImage's bytes: 3 frames of garbage 'extracted' as .jpg files that
    # training could not read (written 3, failed 0)
    from vidseg_ros.data.datasets.extract import ExtractConfig, extract
    payloads = [('jpeg', cv2.imencode('.jpg', _frames(0))[1].tobytes())] + [('jpeg', b'\x00not an image' * 9)] * 3
    res = extract([_compressed_bag(tmp_path / 'bag', payloads)], tmp_path / 'out', ExtractConfig(image_format='keep'))
    assert res.written == 1 and res.failed == 3
    assert 'compressed data is not PNG, JPEG, WebP or BMP' in res.first_failure
    assert len(list((tmp_path / 'out' / 'images').rglob('*.*'))) == 1


def test_extract_keeps_as_depth_only_what_the_node_decodes_as_depth():
    """`--image-format keep` took '16UC1; compresseddepth' (lowercase) as a depth PNG (kept, suffix .png) while the
    node and exif's header removal took only 'compressedDepth': the kept .png still began with the 12-byte depth
    header, a file no reader opens. One test now (images.is_compressed_depth): the lowercase spelling is decoded as
    the node decodes it, the proper one is kept without its header."""
    from vidseg_ros.data.bags.from_frames import TYPESTORE
    from vidseg_ros.data.bags.reader import RawMessage
    from vidseg_ros.data.datasets.frame_files import file_suffix, kept_as_recorded
    from vidseg_ros.data.exif import kept_frame_bytes
    T = TYPESTORE.types
    png = cv2.imencode('.png', np.full((6, 8), 7, np.uint8))[1].tobytes()
    for fmt, kept in (('16UC1; compressedDepth', True), ('16UC1; compresseddepth', False)):
        msg = T['sensor_msgs/msg/CompressedImage'](
            header=T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=1, nanosec=0), frame_id='c'),
            format=fmt, data=np.frombuffer(bytes(12) + png, np.uint8))
        raw = RawMessage('b', '/c', 'sensor_msgs/msg/CompressedImage', 0,
                         bytes(TYPESTORE.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage')), 'cdr')
        recorded = kept_as_recorded(raw, 'keep')
        assert (recorded is not None) is kept, fmt
        if kept:
            assert file_suffix(recorded, 'keep') == '.png'
            data, _ = kept_frame_bytes(bytes(12) + png, fmt, '.png', 95)
            assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
