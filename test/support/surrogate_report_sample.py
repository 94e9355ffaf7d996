"""Run only by test_xdist_reports.py (not a test_ file): reports holding a lone surrogate, as Python decodes a
non-UTF-8 file name, in a captured log and in a failure."""
import logging

NAME = 'caf\udce9'


def test_logs_a_non_utf8_name():
    logging.getLogger('vidseg_ros.sample').warning('wrote %s', NAME)


def test_fails_on_a_non_utf8_name():
    assert NAME == 'cafe', NAME
