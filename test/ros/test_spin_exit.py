"""The one run loop's exit status says why a node ended: a bug in a callback while running is exit 1 with
its traceback (not the one-line start-up error, exit 2); a start-up failure stays one line, exit 2."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('rclpy')

NODES = textwrap.dedent('''
    import sys
    from rclpy.node import Node
    from vidseg_ros.ros.spin import run

    class Buggy(Node):
        def __init__(self):
            super().__init__('buggy_node')
            self.create_timer(0.05, self.tick)

        def tick(self):
            raise ZeroDivisionError('a bug in a callback')

    class BadStart(Node):
        def __init__(self):
            raise ValueError('model nope.pt does not exist')

    sys.exit(run({'buggy': Buggy, 'bad_start': BadStart}[sys.argv[1]]))
''')


def run_node(kind: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', NODES, kind], capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'PYTHONUNBUFFERED': '1'})


def test_a_bug_in_a_callback_is_exit_1_with_its_traceback():
    r = run_node('buggy')
    assert r.returncode == 1, r.stderr
    assert 'Traceback' in r.stderr and 'ZeroDivisionError: a bug in a callback' in r.stderr
    assert 'unexpected error in a callback' in r.stderr.strip().splitlines()[-1]


def test_a_start_up_failure_is_one_line_and_exit_2():
    r = run_node('bad_start')
    assert r.returncode == 2
    assert r.stderr.strip() == 'BadStart: ValueError: model nope.pt does not exist'
