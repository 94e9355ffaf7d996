"""Checks every ROS process of the package makes as it starts (nodes through ``spin.run``, and the demo).

Standard library only, no rclpy: unit-tested in test/core. Each check returns the words to print (one line),
or nothing when all is well; the caller decides whether it is fatal (exit 2) or a warning.
"""
from __future__ import annotations

import errno
import os
import re

MAX_DOMAIN_ID = 232              # FastDDS computes its ports from the domain: above this they overflow
_LOG_DIR_ADVICE = 'set ROS_LOG_DIR (or ROS_HOME) to a writable folder'


def domain_id_problem(env=os.environ) -> str | None:
    """Why ``ROS_DOMAIN_ID`` cannot be used, or None. rcl rejected 'abc' with a traceback, took -1 without a
    word (running on some other domain) and FastDDS ended the process over 232 ("port number is too high")."""
    text = env.get('ROS_DOMAIN_ID', '')
    if text == '' or (re.fullmatch(r'[0-9]+', text) and int(text) <= MAX_DOMAIN_ID):
        return None
    return (f'ROS_DOMAIN_ID={text[:40]!r} is not a ROS domain: set it to an integer from 0 to {MAX_DOMAIN_ID} '
            '(0-101 is safe everywhere on Linux), or unset it for domain 0')


def init_failure(error: Exception) -> str:
    """One line for an ``rclpy.init`` failure: rcl's own reason without its C source locations, and what to
    do when it is the log folder (HOME unset or read-only: rcl cannot create ~/.ros/log)."""
    reason = re.sub(r', at /\S+:\d+', '', str(error)).strip() or type(error).__name__
    # rcl prints the errno as a bare number ("Failed to create log directory '...': 30")
    reason = re.sub(r"(log directory '.*'): (\d+)$",
                    lambda m: f'{m[1]}: {os.strerror(int(m[2])) if int(m[2]) in errno.errorcode else m[2]}', reason)
    advice = f'; {_LOG_DIR_ADVICE}' if 'logging' in reason or 'log directory' in reason else ''
    return f'cannot start ROS: {reason}{advice}'
