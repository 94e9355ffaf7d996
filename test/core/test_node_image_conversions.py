"""What the segment node makes of the untrusted frames it is sent (ros.conversions -> data.images), checked against
conversions written independently of ours (OpenCV's, or values worked out by hand), for the encodings and decisions
mutation testing found unpinned: 16-bit and float frames, 16-bit and 4-channel compressed images, a 1x1 image, and
max_input_pixels at its boundary for raw frames."""
import cv2
import numpy as np
import pytest

from vidseg_ros.data.images import ImageError, array_to_image_fields, decode_compressed, image_fields_to_rgb8

RNG = np.random.default_rng(7)


def fields_of(arr, encoding, big_endian=False, pad=0):
    """Image message fields of ``arr`` as a driver sends them: rows of ``pad`` extra bytes, either byte order."""
    f = array_to_image_fields(arr, encoding)
    rows = np.frombuffer(f['data'], np.uint8).reshape(f['height'], f['step'])
    if big_endian:
        item = arr.dtype.itemsize
        rows = rows.reshape(f['height'], -1, item)[:, :, ::-1].reshape(f['height'], f['step'])
    if pad:
        rows = np.concatenate([rows, np.full((f['height'], pad), 0xAB, np.uint8)], axis=1)
    return f['encoding'], f['height'], f['width'], f['step'] + pad, rows.tobytes(), int(big_endian)


def to_8bit(arr16):
    """16 -> 8 bits as cv_bridge does (convertTo with 255/65535), which ours may round the other way by one."""
    return cv2.convertScaleAbs(arr16, alpha=255 / 65535)


@pytest.mark.parametrize('big_endian', [False, True])
@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
def test_a_16_bit_grey_frame_is_its_8_bit_grey_in_three_channels(encoding, big_endian):
    depth = RNG.integers(0, 65536, (6, 10), dtype=np.uint16)
    depth[0, :4] = [0, 255, 32768, 65535]
    rgb = image_fields_to_rgb8(*fields_of(depth, encoding, big_endian, pad=6))
    expected = cv2.cvtColor(to_8bit(depth), cv2.COLOR_GRAY2RGB)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 10, 3)
    assert np.abs(rgb.astype(int) - expected).max() <= 1
    assert rgb[0, :4, 0].tolist() == [0, 0, 128, 255]


@pytest.mark.parametrize('encoding', ['rgb16', 'bgr16'])
def test_a_16_bit_colour_frame_keeps_its_channel_order(encoding):
    colour = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    colour[0, 0] = [65535, 0, 0]     # red in rgb16, blue in bgr16
    rgb = image_fields_to_rgb8(*fields_of(colour, encoding, pad=2))
    eight = to_8bit(colour)
    expected = eight if encoding == 'rgb16' else cv2.cvtColor(eight, cv2.COLOR_BGR2RGB)
    assert np.abs(rgb.astype(int) - expected).max() <= 1
    assert rgb[0, 0].tolist() == ([255, 0, 0] if encoding == 'rgb16' else [0, 0, 255])


def test_a_32fc1_frame_is_0_to_1_scaled_to_0_to_255_with_nan_black_and_infinities_clipped():
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan, np.inf, -np.inf]], np.float32)
    rgb = image_fields_to_rgb8(*fields_of(values, '32FC1', big_endian=True))
    assert rgb[0, :, 0].tolist() == [0, 127, 255, 255, 0, 0, 255, 0]
    assert (rgb == rgb[:, :, :1]).all()


def test_a_16_bit_png_decodes_to_its_8_bit_rgb():
    bgr16 = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    ok, png = cv2.imencode('.png', bgr16)
    rgb = decode_compressed('png', png.tobytes())
    assert rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - cv2.cvtColor(to_8bit(bgr16), cv2.COLOR_BGR2RGB)).max() <= 1


def test_a_png_with_alpha_decodes_to_its_colours():
    bgra = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    ok, png = cv2.imencode('.png', bgra)
    assert np.array_equal(decode_compressed('rgba8; png compressed', png.tobytes()), bgra[:, :, 2::-1])


def test_a_1x1_compressed_image_decodes():
    ok, png = cv2.imencode('.png', np.array([[[10, 20, 30]]], np.uint8))
    assert decode_compressed('png', png.tobytes()).tolist() == [[[30, 20, 10]]]
    ok, grey = cv2.imencode('.png', np.array([[77]], np.uint8))   # one pixel, one channel: a single sample
    assert decode_compressed('png', grey.tobytes()).tolist() == [[[77, 77, 77]]]


def test_max_input_pixels_takes_a_raw_frame_of_exactly_that_many_and_refuses_one_more():
    frame = np.zeros((10, 10, 3), np.uint8)
    assert image_fields_to_rgb8(*fields_of(frame, 'rgb8'), max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageError, match='exceeds max_input_pixels 99'):
        image_fields_to_rgb8(*fields_of(frame, 'rgb8'), max_pixels=99)


@pytest.mark.parametrize('height,width', [(0, 4), (4, 0), (0, 0)])
def test_a_frame_with_one_side_zero_is_refused(height, width):
    with pytest.raises(ImageError, match='zero-size'):
        image_fields_to_rgb8('rgb8', height, width, width * 3, b'', 0)
