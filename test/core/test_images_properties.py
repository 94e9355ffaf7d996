"""Property tests (hypothesis) of the one door every camera frame comes through, without ROS: Image fields and
CompressedImage bytes -> RGB. For ANY field values and bytes the answer is an (H, W, 3) uint8 array of the
header's size or an ImageError saying why, never another exception, and never an allocation bigger than
``max_pixels`` allows. The ROS fuzz test (test/ros/test_segment_fuzz.py) drives the node with a seeded
generator; here hypothesis searches the same space and shrinks what it finds to the smallest case."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from vidseg_ros.data.images import (ENCODINGS, ImageError, array_to_image_fields, decode_compressed,
                                    image_fields_to_rgb8, to_rgb8)

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_PIXELS = 4096
encodings = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=12))
sizes = st.integers(min_value=-3, max_value=70)


@SETTINGS
@given(encoding=encodings, height=sizes, width=sizes, step=st.integers(-8, 300), big=st.integers(0, 1),
       data=st.binary(max_size=4000))
@example(encoding='yuv422', height=1, width=3, step=6, big=0, data=b'\0' * 6)      # odd width of a 2-pixel pack
@example(encoding='rgb16', height=2, width=2, step=12, big=1, data=b'\1' * 24)
def test_any_image_fields_give_rgb8_of_their_size_or_an_image_error(encoding, height, width, step, big, data):
    try:
        rgb = image_fields_to_rgb8(encoding, height, width, step, data, big, max_pixels=MAX_PIXELS)
    except ImageError as e:
        assert str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (height, width, 3) and height * width <= MAX_PIXELS


@SETTINGS
@given(encoding=st.sampled_from(sorted(ENCODINGS)), height=st.integers(1, 9), width=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_every_encoding_round_trips_through_message_fields(encoding, height, width, seed):
    dtype, channels = ENCODINGS[encoding]
    if encoding in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'):
        width += width % 2
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    arr = (rng.random(shape, dtype=np.float32) if dtype == 'f4'
           else rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype))
    fields = array_to_image_fields(arr, encoding)
    got = image_fields_to_rgb8(fields['encoding'], fields['height'], fields['width'], fields['step'], fields['data'])
    np.testing.assert_array_equal(got, to_rgb8(arr, encoding))


def _png(width: int, height: int, body: bytes) -> bytes:
    def chunk(kind, payload):
        return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', body) + chunk(b'IEND', b'')


def _real(kind: str) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    return cv2.imencode('.png' if kind == 'png' else '.jpg', img)[1].tobytes()


def _mutated(draw) -> bytes:
    """A real PNG or JPEG with bytes flipped, cut, or a header claiming another size (bombs included)."""
    data = bytearray(_real(draw(st.sampled_from(['png', 'jpeg']))))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


compressed = st.one_of(
    st.binary(max_size=600),
    st.composite(_mutated)(),
    st.builds(_png, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.binary(max_size=64)),
)


@SETTINGS
@given(fmt=st.one_of(st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8', '16UC1; compressedDepth png']),
                     st.text(max_size=40)),
       data=compressed)
@example(fmt='png', data=_png(100_000, 100_000, b''))       # a bomb: 10^10 pixels claimed in 60 bytes
def test_any_compressed_bytes_give_rgb8_or_an_image_error_without_decoding_a_bomb(fmt, data):
    try:
        rgb = decode_compressed(fmt, data, max_pixels=MAX_PIXELS)
    except ImageError as e:
        assert str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS


@pytest.mark.parametrize('kind', ['png', 'jpeg'])
def test_the_real_images_the_strategies_mutate_decode(kind):
    """The mutation strategy starts from images that decode: a broken seed would test only the error path."""
    assert decode_compressed(kind, _real(kind), max_pixels=MAX_PIXELS).shape == (12, 16, 3)
