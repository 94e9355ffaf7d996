"""The start-up checks every ROS process makes (vidseg_ros.ros.startup, no rclpy): a ROS_DOMAIN_ID rcl or
FastDDS would reject or misread, rcl's init failures in one line, and the FastDDS set-ups that lose large
images without a word of ours (a missing or broken profile file, /dev/shm too full for the segment)."""
import errno

import pytest

from support.paths import ROOT

from vidseg_ros.ros.startup import (FASTDDS_DEFAULT_SEGMENT, PROFILE_ENV, domain_id_problem, init_failure,
                                    segment_bytes, transport_warnings)

SHIPPED = ROOT / 'config' / 'fastdds_shm.xml'


@pytest.mark.parametrize('value', ['', '0', '42', '232'])
def test_a_usable_domain_id_passes(value):
    assert domain_id_problem({'ROS_DOMAIN_ID': value}) is None
    assert domain_id_problem({}) is None


@pytest.mark.parametrize('value', ['abc', '-1', '233', '300', '1.5', ' 7'])
def test_a_domain_id_ros_would_reject_or_misread_is_one_line(value):
    """'abc' was rcl's traceback, -1 ran silently on some other domain, 300 made FastDDS exit 1."""
    problem = domain_id_problem({'ROS_DOMAIN_ID': value})
    assert problem and repr(value) in problem and '0 to 232' in problem and '\n' not in problem


def test_an_rcl_log_folder_failure_names_the_fix():
    home_unset = RuntimeError('failed to initialize logging: Failed to get logging directory: rcutils_expand_user '
                              'failed, at /project/src/logging_dir.c:82, at /project/src/rcl_logging_spdlog.cpp:137')
    line = init_failure(home_unset)
    assert line == ('cannot start ROS: failed to initialize logging: Failed to get logging directory: '
                    'rcutils_expand_user failed; set ROS_LOG_DIR (or ROS_HOME) to a writable folder')
    read_only = RuntimeError(f"failed to initialize logging: Failed to create log directory '/h/.ros/log': "
                             f"{errno.EROFS}, at /project/src/rcl_logging_spdlog.cpp:153")
    assert "'/h/.ros/log': Read-only file system; set ROS_LOG_DIR" in init_failure(read_only)
    other = RuntimeError('failed to initialize rcl: something else, at /project/src/rcl/init.c:1')
    assert init_failure(other) == 'cannot start ROS: failed to initialize rcl: something else'


def test_the_shipped_profile_is_read_and_passes():
    assert segment_bytes(str(SHIPPED)) == 32 << 20
    env = {PROFILE_ENV: str(SHIPPED), 'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'}
    assert transport_warnings(env, shm_dir=str(ROOT)) == []   # ROOT's disk has 32 MiB free


def test_a_missing_or_broken_profile_is_said(tmp_path):
    """FastDDS printed only "XMLPARSER Error" and went on with its 512 KB segment: 1080p frames were lost."""
    bad = tmp_path / 'bad.xml'
    bad.write_text('<profiles><transport_descriptors>')
    for path, words in ((tmp_path / 'missing.xml', 'does not exist'), (bad, 'is not valid XML')):
        (warning,) = transport_warnings({PROFILE_ENV: str(path)}, shm_dir=str(tmp_path))
        assert str(path) in warning and words in warning and 'large images will be lost' in warning
    # another middleware: FastDDS's profile does not matter
    assert transport_warnings({PROFILE_ENV: str(bad), 'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) == []


def test_a_shm_folder_with_less_free_space_than_the_segment_is_said(tmp_path):
    """/dev/shm nearly full: FastDDS could not create its 32 MB segment and 1080p frames silently did not
    arrive. The segment size is the profile's (here one larger than any disk)."""
    huge = tmp_path / 'huge.xml'
    huge.write_text(SHIPPED.read_text().replace('<segment_size>33554432<', f'<segment_size>{1 << 60}<'))
    assert segment_bytes(str(huge)) == 1 << 60
    (warning,) = transport_warnings({PROFILE_ENV: str(huge)}, shm_dir=str(tmp_path))
    assert str(tmp_path) in warning and 'MiB free' in warning and 'large images will be lost' in warning
    assert segment_bytes(None) == FASTDDS_DEFAULT_SEGMENT
