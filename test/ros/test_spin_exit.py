"""The one run loop's exit status says why a node ended: a bug in a callback while running is exit 1 with
its traceback (not the one-line start-up error, exit 2); a start-up failure stays one line, exit 2; a
SIGINT/SIGTERM while the executable is still importing is a clean stop, exit 0."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip('rclpy')
from support.paths import ROOT  # noqa: E402

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


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['sigint', 'sigterm'])
@pytest.mark.parametrize('node', ['segment_node', 'video_source_node'])
def test_a_signal_during_start_up_imports_is_exit_0(node, sig, tmp_path):
    """The executable launch starts (scripts/<node>), signalled while it imports rclpy and torch: it gave
    -2 with a KeyboardInterrupt traceback, -15, once -6 (pybind11 terminate); launch respawns those.
    (Should it be up already on a fast machine, it stops cleanly all the same: exit 0 either way.)"""
    env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}'}
    cv2.imwrite(str(tmp_path / 'frame.png'), np.zeros((8, 8, 3), np.uint8))
    args = ['--ros-args', '-p', f'source:={tmp_path}', '-p', 'loop:=true'] if node == 'video_source_node' else []
    proc = subprocess.Popen([str(ROOT / 'scripts' / node), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=_default_signals)
    time.sleep(0.5)   # python is up and importing (torch alone takes seconds), the node not started yet
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and 'Traceback' not in out and 'terminate called' not in out, out


def _default_signals() -> None:
    """As launch starts its nodes (a test run in the background inherits SIGINT ignored)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
