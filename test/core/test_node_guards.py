"""The segment node's ROS-free guards (issue 11): size checks before decoding, per-key throttling,
CameraInfo and stamp sanity, model/device pre-flight, health verdicts, setting ranges."""
import math
import struct
import zlib

import cv2
import numpy as np
import pytest

from vidseg_ros.config import ConfigError, from_dict
from vidseg_ros.data.image_headers import compressed_size
from vidseg_ros.data.images import ImageError, decode_compressed, encode_compressed, image_fields_to_rgb8
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.ros import health
from vidseg_ros.engine.devices import check_device
from vidseg_ros.ros.guards import (ErrorThrottle, camera_info_image_size, camera_info_problem,
                                   camera_info_size_problem, check_model_spec, stamp_is_sane)
from vidseg_ros.ros.settings import SegmentNodeConfig


def png_header_only(width, height):
    """A PNG whose IHDR claims width x height, with a tiny all-zero IDAT (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


def test_compressed_size_reads_png_and_jpeg_headers_without_decoding():
    rgb = np.zeros((37, 53, 3), np.uint8)
    for fmt in ('png', 'jpeg'):
        _, data = encode_compressed(rgb, fmt)
        assert compressed_size(data) == (fmt, 37, 53)
    assert compressed_size(png_header_only(30000, 30000)) == ('png', 30000, 30000)
    for junk in (b'GIF89a....', b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'\xff\xd8' + b'\x00' * 50):
        with pytest.raises(ImageError):
            compressed_size(junk)


@pytest.mark.parametrize('fmt,data', [
    ('png', png_header_only(30000, 30000)),                      # would allocate 2.7 GB
    ('png', png_header_only(70000, 70000)),                      # beyond OpenCV's own 2^30 assertion
    ('compressedDepth', b'\0' * 12),                             # nothing after the 12-byte header
    ('compressedDepth', b'\0' * 5),
    ('jpeg', b'\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03' + b'\0' * 40),   # SOF claims 65535^2
    ('jpeg', b'GIF89a' + b'\0' * 40),
])
def test_bombs_and_truncated_buffers_are_image_errors(fmt, data):
    with pytest.raises(ImageError):
        decode_compressed(fmt, data, max_pixels=4096 * 4096)


def test_raw_images_are_bounded_and_odd_yuv_widths_refused():
    with pytest.raises(ImageError, match='max_input_pixels'):
        image_fields_to_rgb8('mono8', 5000, 5000, 5000, b'', max_pixels=4096 * 4096)
    for enc in ('yuv422', 'uyvy', 'yuyv', 'yuv422_yuy2'):
        with pytest.raises(ImageError, match='even'):
            image_fields_to_rgb8(enc, 3, 3, 6, bytes(18))
        assert image_fields_to_rgb8(enc, 2, 4, 8, bytes(16)).shape == (2, 4, 3)


def test_hostile_strings_are_truncated_in_errors():
    with pytest.raises(ImageError) as e:
        image_fields_to_rgb8('x' * 1_000_000, 2, 2, 6, bytes(12))
    assert len(str(e.value)) < 600 and '1000000 characters' in str(e.value)


def test_cv2_errors_become_image_errors(monkeypatch):
    def boom(*a, **k):
        raise cv2.error('assertion failed')
    monkeypatch.setattr(cv2, 'cvtColor', boom)
    with pytest.raises(ImageError, match='assertion failed'):
        image_fields_to_rgb8('bayer_rggb8', 4, 4, 4, bytes(16))


def test_throttle_is_per_key_and_counts_what_it_suppressed():
    t = ErrorThrottle()
    assert t.allow(('bad_input', 'front'), 5.0, now=0.0) == (True, 0)
    assert t.allow(('bad_input', 'front'), 5.0, now=1.0) == (False, 0)
    assert t.allow(('engine', 'front'), 5.0, now=1.0) == (True, 0)      # another kind: not hidden
    assert t.allow(('bad_input', 'rear'), 5.0, now=1.0) == (True, 0)     # another camera: not hidden
    assert t.allow(('bad_input', 'front'), 5.0, now=6.0) == (True, 1)
    assert t.allow(('bad_input', 'front'), 0.0, now=6.0) == (True, 0)    # a new period applies at once


def test_camera_info_and_stamp_sanity():
    k = [500.0, 0, 320, 0, 500.0, 240, 0, 0, 1]
    p = [500.0, 0, 320, 0, 0, 500.0, 240, 0, 0, 0, 1, 0]
    r = [1.0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert camera_info_problem(640, 480, k, [0.0] * 5, r, p, 4096 * 4096) is None
    assert 'non-finite' in camera_info_problem(640, 480, k[:2] + [math.nan] + k[3:], [], r, p, 10**8)
    assert 'non-finite' in camera_info_problem(640, 480, k, [math.inf], r, p, 10**8)
    assert 'absurd' in camera_info_problem(640, 480, [1e300] + k[1:], [], r, p, 10**8)
    assert 'zero size' in camera_info_problem(0, 480, k, [], r, p, 10**8)
    assert 'exceeds' in camera_info_problem(100000, 100000, k, [], r, p, 10**8)
    now = 1_700_000_000 * 10**9
    assert stamp_is_sane(now - 50_000_000, now) and not stamp_is_sane(0, now)
    assert not stamp_is_sane(now + 3600 * 10**9, now)


def camera_info(width, height, binning=(0, 0), roi=(0, 0, 0, 0)):
    """The CameraInfo fields the size check reads; roi = (x_offset, y_offset, width, height)."""
    from types import SimpleNamespace
    return SimpleNamespace(width=width, height=height, binning_x=binning[0], binning_y=binning[1],
                           roi=SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3]))


def test_the_image_size_a_camera_info_describes():
    """REP-104: the ROI when set, else the full size, divided by the binning; a binned or ROI camera
    legitimately sends a CameraInfo larger than its image."""
    assert camera_info_image_size(camera_info(640, 480)) == (640, 480)
    assert camera_info_image_size(camera_info(640, 480, binning=(1, 1))) == (640, 480)
    assert camera_info_image_size(camera_info(1280, 960, binning=(2, 2))) == (640, 480)
    assert camera_info_image_size(camera_info(1920, 1080, roi=(100, 50, 640, 480))) == (640, 480)
    assert camera_info_image_size(camera_info(2560, 1920, (2, 4), roi=(8, 8, 1280, 1920))) == (640, 480)


def test_a_camera_info_of_another_image_size_is_a_problem():
    """It was rescaled from its own size: 640x480 images with a 320x961 CameraInfo got fx 320, fy 79.9."""
    assert camera_info_size_problem((640, 480), (640, 480)) is None
    problem = camera_info_size_problem(camera_info_image_size(camera_info(320, 961)), (640, 480))
    assert '320x961' in problem and '640x480' in problem


def test_model_and_device_preflight(tmp_path):
    check_model_spec('untrained:keyframe_fpn')
    check_device('cpu')
    check_device('auto')
    with pytest.raises(ValueError, match='not found'):
        check_model_spec('/nonexistent/model.pt')
    with pytest.raises(ValueError, match='architecture'):
        check_model_spec('untrained:nope')
    fake = tmp_path / 'fake.pt'
    fake.write_bytes(b'not a zip archive')
    with pytest.raises(ValueError, match='not a PyTorch archive'):
        check_model_spec(str(fake))
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'<html>404 Not Found</html>')     # a failed download, saved under the model's name
    with pytest.raises(ValueError, match='not an ONNX model'):
        check_model_spec(str(garbage))
    import onnx
    real = tmp_path / 'real.onnx'
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], 'g', [], [])), real)
    check_model_spec(str(real))
    with pytest.raises(ValueError):
        check_device('cuda:9')
    with pytest.raises(ValueError):
        check_device('tpu')


def test_setting_ranges_nan_and_lengths_are_checked_for_yaml_too():
    for bad in ({'keyframe_interval': 0}, {'keyframe_interval': -1}, {'keyframe_threshold': math.nan},
                {'max_gap_s': -1.0}, {'tile_size': -5}, {'input_hw': [0, 0]}, {'input_hw': [96]}):
        with pytest.raises(ConfigError):
            from_dict(EngineConfig, bad)
    for bad in ({'overlay_alpha': 7.5}, {'overlay_alpha': math.nan}, {'error_throttle_s': -1.0},
                {'class_prob_index': -2}, {'palette': [0, 300, 0]}, {'max_input_pixels': 0}):
        with pytest.raises(ConfigError):
            from_dict(SegmentNodeConfig, bad)
    assert from_dict(EngineConfig, {'input_hw': [96, 128]}).input_hw == [96, 128]


def test_health_verdicts():
    assert health.assess(health.CameraHealth(worker_alive=False, worker_error='boom'))[0] == health.ERROR
    assert health.assess(health.CameraHealth(busy_s=30.0, frame_ms=50.0))[0] == health.ERROR
    level, message = health.assess(health.CameraHealth(busy_s=30.0, frame_ms=50.0, busy_camera='rear\x1b' + 'r' * 500))
    assert level == health.ERROR and "camera 'rear\\x1b" in message and len(message) < 200
    assert health.assess(health.CameraHealth(busy_s=0.5, frame_ms=50.0, frames_out=3))[0] == health.OK
    assert health.assess(health.CameraHealth(recent_frames=20, recent_rejected=15))[0] == health.ERROR
    # 30 Hz in, 20 ms per frame: latest-frame-wins allows 30 Hz out; 5 Hz out is a shortfall...
    slow = health.CameraHealth(frame_ms=20.0, input_hz=30.0, output_hz=5.0, recent_frames=50, frames_out=50)
    assert health.assess(slow)[0] == health.WARN
    # ...while 100 ms per frame explains 10 Hz out of 30 Hz in.
    busy = health.CameraHealth(frame_ms=100.0, input_hz=30.0, output_hz=9.0, recent_frames=50, frames_out=50)
    assert health.assess(busy)[0] == health.OK
    outcomes = health.Outcomes()
    for i in range(10):
        outcomes.add(i % 2 == 0, now=float(i))
    assert outcomes.recent(window_s=5.0, now=9.0) == (6, 3)
