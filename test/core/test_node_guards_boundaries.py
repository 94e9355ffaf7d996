"""ros.guards at the edges of what it lets through (mutation testing found each unpinned): the error-log throttle on
a monotonic clock that is not near 0, the stamp bound at exactly BAD_STAMP_S, CameraInfo size and value limits at
their boundary, and the focal-length check that refuses a bad calibration but passes an uncalibrated (all-zero) K."""
import pytest

from vidseg_ros.ros.guards import BAD_STAMP_S, MAX_CAMERA_VALUE, ErrorThrottle, camera_info_problem, stamp_is_sane

K = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
P = [500.0, 0.0, 320.0, 0.0, 0.0, 500.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
R = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_the_throttle_measures_the_period_from_the_last_log_on_a_real_monotonic_clock():
    t, key, start = ErrorThrottle(), ('bad_input', 'front'), 86_400.0    # a machine up for a day
    assert t.allow(key, 5.0, now=start) == (True, 0)
    assert t.allow(key, 5.0, now=start + 4.9) == (False, 0)
    assert t.allow(key, 5.0, now=start + 5.0) == (True, 1)      # a full period later: logged, one suppressed
    assert t.allow(key, 5.0, now=start + 5.1) == (False, 0)


def test_a_stamp_exactly_bad_stamp_s_away_is_sane_a_nanosecond_more_is_not():
    now, bound = 1_700_000_000 * 10**9, int(BAD_STAMP_S * 10**9)
    assert stamp_is_sane(now - bound, now) and stamp_is_sane(now + bound, now)
    assert not stamp_is_sane(now - bound - 1, now) and not stamp_is_sane(now + bound + 1, now)


@pytest.mark.parametrize('width,height', [(0, 480), (640, 0), (-1, 480)])
def test_a_camera_info_with_a_side_zero_is_a_problem(width, height):
    assert 'zero size' in camera_info_problem(width, height, K, [], R, P, 10**8)


def test_a_1x1_camera_info_and_one_of_exactly_max_pixels_pass_one_pixel_more_does_not():
    assert camera_info_problem(1, 1, K, [], R, P, 10**8) is None
    assert camera_info_problem(640, 480, K, [], R, P, 640 * 480) is None
    assert 'exceeds max_input_pixels' in camera_info_problem(640, 480, K, [], R, P, 640 * 480 - 1)


def test_k_and_p_values_up_to_max_camera_value_pass():
    assert camera_info_problem(640, 480, [MAX_CAMERA_VALUE] + K[1:], [], R, [-MAX_CAMERA_VALUE] + P[1:], 10**8) is None
    assert 'absurd' in camera_info_problem(640, 480, [MAX_CAMERA_VALUE * 1.001] + K[1:], [], R, P, 10**8)


def test_focal_lengths_must_be_positive_unless_k_is_the_uncalibrated_zero():
    for fx, fy in ((-500.0, 500.0), (500.0, 0.0), (500.0, -1.0)):
        k = [fx] + K[1:4] + [fy] + K[5:]
        assert 'focal lengths must be positive' in camera_info_problem(640, 480, k, [], R, P, 10**8), (fx, fy)
    # sensor_msgs/CameraInfo: an uncalibrated camera sends K, D, R, P all zero; it goes out rescaled, still zero
    assert camera_info_problem(640, 480, [0.0] * 9, [], [0.0] * 9, [0.0] * 12, 10**8) is None


def test_a_binned_odd_sized_sensor_describes_the_whole_pixels_a_driver_sends():
    """641x481 binned 2x2: the driver sends 320x240 (whole binned pixels), and that image matches its CameraInfo."""
    from types import SimpleNamespace

    from vidseg_ros.ros.guards import camera_info_image_size, camera_info_size_problem
    info = SimpleNamespace(width=641, height=481, binning_x=2, binning_y=2,
                           roi=SimpleNamespace(width=0, height=0, x_offset=0, y_offset=0))
    assert camera_info_image_size(info) == (320, 240)
    assert camera_info_size_problem(camera_info_image_size(info), (320, 240)) is None
