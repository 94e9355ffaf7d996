"""Every Image encoding round-trips through numpy; malformed messages fail with clear errors."""
import numpy as np
import pytest

from vidseg_ros.data.images import (ENCODINGS, ImageError, array_to_image_fields, decode_compressed,
                                    encode_compressed, image_fields_to_rgb8, image_to_array)

RNG = np.random.default_rng(0)


def _array(encoding, h=5, w=6):
    dtype, ch = ENCODINGS[encoding]
    shape = (h, w) if ch == 1 else (h, w, ch)
    if dtype == 'f4':
        return RNG.random(shape, dtype=np.float32)
    return RNG.integers(0, np.iinfo(np.dtype(dtype)).max, shape, dtype=np.dtype(dtype))


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    arr = _array(encoding)
    f = array_to_image_fields(arr, encoding)
    back = image_to_array(**f)
    np.testing.assert_array_equal(back, arr)
    rgb = image_fields_to_rgb8(**f)
    assert rgb.shape == (5, 6, 3) and rgb.dtype == np.uint8


def test_padded_rows_and_big_endian():
    arr = _array('mono16')
    padded = np.zeros((5, 16), np.uint8)
    padded[:, :12] = arr.astype('>u2').view(np.uint8).reshape(5, 12)
    back = image_to_array('mono16', 5, 6, 16, padded.tobytes(), is_bigendian=1)
    np.testing.assert_array_equal(back, arr)


def test_colour_orders_agree():
    rgb = _array('rgb8')
    assert (image_fields_to_rgb8(**array_to_image_fields(rgb[:, :, ::-1], 'bgr8')) == rgb).all()
    bgra = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])
    assert (image_fields_to_rgb8(**array_to_image_fields(bgra, 'bgra8')) == rgb).all()


@pytest.mark.parametrize('fields, message', [
    (dict(encoding='rgb8', height=4, width=4, step=11, data=b'\0' * 44), 'step 11 is smaller'),
    (dict(encoding='rgb8', height=4, width=4, step=12, data=b'\0' * 40), r'expected step\*height'),
    (dict(encoding='hsv42', height=4, width=4, step=12, data=b'\0' * 48), 'unsupported encoding'),
    (dict(encoding='rgb8', height=0, width=0, step=0, data=b''), 'zero-size'),
])
def test_malformed_messages_raise_clear_errors(fields, message):
    with pytest.raises(ImageError, match=message):
        image_to_array(**fields)


def test_compressed_round_trip_and_corrupt_data():
    rgb = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    fmt, data = encode_compressed(rgb, 'png')
    assert (decode_compressed(fmt, data) == rgb).all()
    fmt, data = encode_compressed(rgb, 'jpeg', 95)
    assert np.abs(decode_compressed(fmt, data).astype(int) - rgb).mean() < 3
    with pytest.raises(ImageError, match='cannot decode'):
        decode_compressed('jpeg', data[: len(data) // 3] + b'garbage')
    with pytest.raises(ImageError, match='empty'):
        decode_compressed('jpeg', b'')


def test_write_image_atomic_on_a_full_disk_raises_and_keeps_the_old_file(tmp_path):
    """cv2.imwrite returned True over a truncated file (the file size limit or a full disk hit at close)."""
    import errno

    import cv2
    from support.disk import file_size_limit

    from vidseg_ros.data.images import write_image_atomic
    rng = np.random.default_rng(0)
    path = write_image_atomic(tmp_path / 'a.png', np.zeros((8, 8), np.uint8))
    before = path.read_bytes()
    with file_size_limit(1000), pytest.raises(OSError) as err:
        write_image_atomic(path, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))   # ~12 kB of noise
    assert err.value.errno == errno.EFBIG and err.value.filename == str(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['a.png']
    big = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(cv2.imread(str(write_image_atomic(path, big))), big)


def test_write_image_atomic_refuses_what_cannot_be_encoded(tmp_path):
    from vidseg_ros.data.images import write_image_atomic
    with pytest.raises(ImageError, match='cannot encode'):
        write_image_atomic(tmp_path / 'a.xyz', np.zeros((8, 8), np.uint8))
    assert not list(tmp_path.iterdir())


def test_an_unreadable_file_with_escapes_in_its_name_is_quoted_harmlessly(tmp_path):
    """video_source_node logged 'skipping unreadable frame: cannot read image file .../b<ESC>]0;owned<BEL>.png'
    raw: a file name in someone's image folder set the terminal title or forged a log line."""
    from vidseg_ros.data.images import read_rgb
    bad = tmp_path / 'b\x1b]0;owned\x07\x1b[2J\n[ERROR] fake.png'
    bad.write_bytes(b'junk')
    with pytest.raises(ImageError) as e:
        read_rgb(bad)
    assert not [c for c in str(e.value) if ord(c) < 32 or 127 <= ord(c) < 160], repr(str(e.value))
    assert 'b\\x1b]0;owned\\x07\\x1b[2J\\n[ERROR] fake.png' in str(e.value)
