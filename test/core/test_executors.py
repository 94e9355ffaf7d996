"""The local process pool of the data loop (extract, propagate) under Ctrl-C and a killed parent.

Ctrl-C in a terminal signals the whole process group: each idle pool worker printed a 20-line
``Process ForkProcess-N: Traceback ... KeyboardInterrupt``. A SIGKILL of the parent left its workers
running, re-parented, one at 98 % CPU for as long as its task lasted.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from vidseg_ros.data.executors import task_executor

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='process groups and prctl: Linux')

# A parent with a pool of 2 workers, one busy for a minute, the other idle; it prints the workers' PIDs.
PARENT = '''
import sys, time
from vidseg_ros.data.executors import task_executor

def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

if __name__ == '__main__':
    try:
        with task_executor('local', 2) as pool:
            future = pool.submit(busy, 60)
            while len(pool._processes) < 2:
                time.sleep(0.01)
            print(*pool._processes, flush=True)
            future.result()
    except KeyboardInterrupt:
        sys.exit(130)
'''


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'     # a zombie has ended
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    end = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start(tmp_path):
    script = tmp_path / 'parent.py'
    script.write_text(PARENT)
    err = open(tmp_path / 'stderr.txt', 'w')
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True,
                         start_new_session=True)     # its own process group, as a terminal gives a command
    pids = [int(x) for x in p.stdout.readline().split()]
    assert len(pids) == 2, (tmp_path / 'stderr.txt').read_text()
    return p, pids


def _clean_up(p, pids):
    p.kill()
    p.wait()
    for pid in pids:      # workers of the old code outlived the test
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_of_the_parent_ends_its_workers(tmp_path):
    p, pids = _start(tmp_path)
    try:
        os.kill(p.pid, signal.SIGKILL)     # the parent alone
        p.wait(timeout=10)
        assert _wait_gone(pids, 5.0) == [], 'pool workers outlived their parent'
    finally:
        _clean_up(p, pids)


def test_ctrl_c_to_the_group_is_quiet_and_quick(tmp_path):
    p, pids = _start(tmp_path)
    try:
        time.sleep(0.3)
        start = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(timeout=30) == 130
        assert time.monotonic() - start < 15, 'waited for the running task instead of stopping'
        err = (tmp_path / 'stderr.txt').read_text()
        assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
        assert _wait_gone(pids, 5.0) == []
    finally:
        _clean_up(p, pids)


def test_a_worker_whose_parent_is_already_gone_exits():
    """The race: the parent died between the fork and the prctl, so no death signal will ever come."""
    code = 'import os, sys; from vidseg_ros.data.executors import _worker_start; _worker_start(int(sys.argv[1]))'
    gone = subprocess.run([sys.executable, '-c', code, '1'], timeout=60)   # PID 1 is not its parent
    assert gone.returncode == 1
    here = subprocess.run([sys.executable, '-c', code, str(os.getpid())], timeout=60)
    assert here.returncode == 0


def test_results_are_unchanged():
    with task_executor('local', 2) as pool:
        assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]
