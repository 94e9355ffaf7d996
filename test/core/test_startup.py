"""The start-up checks every ROS process makes (vidseg_ros.ros.startup, no rclpy): a ROS_DOMAIN_ID rcl or
FastDDS would reject or misread, rcl's init failures in one line, and the FastDDS set-ups that lose large
images without a word of ours (a missing or broken profile file, /dev/shm too full for the segment)."""
import errno

import pytest

from vidseg_ros.ros.startup import domain_id_problem, init_failure


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
