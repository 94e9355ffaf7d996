"""The executors at failure: a task that raises on a local Dask cluster, Ctrl-C while Dask tasks run, and
Ctrl-C reaching the executor of a propagation run (which then stops its workers at once)."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='process groups: Linux')

# A driver with a local Dask cluster of 2 workers; 'fail': a task raises in a worker (its error is the driver's
# one line); 'busy': two tasks sleep a minute, the driver prints READY and waits for them (Ctrl-C then).
DRIVER = '''
import sys, time
from vidseg_ros.data.executors import task_executor

if __name__ == '__main__':
    try:
        with task_executor('dask', 2) as pool:
            if sys.argv[1] == 'fail':
                futures = [pool.submit(int, 'x'), pool.submit(int, '7')]
                try:
                    futures[0].result()
                except ValueError as e:
                    print('ERROR', e, flush=True)
                print('OK', futures[1].result(), flush=True)
            else:
                futures = [pool.submit(time.sleep, 60) for _ in range(2)]
                time.sleep(1.0)
                print('READY', flush=True)
                futures[0].result()
    except KeyboardInterrupt:
        sys.exit(130)
'''


def _driver(tmp_path, mode: str) -> subprocess.Popen:
    pytest.importorskip('distributed')
    script = tmp_path / 'driver.py'
    script.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    return subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)    # its own group, as a terminal gives


def test_a_task_error_on_a_local_cluster_is_the_drivers_alone(tmp_path):
    """A worker logged each failing task as a 'Compute Failed' block with the task's traceback (~12 lines on
    stderr before the CLI's one line), and each task the end of the run cancelled as 'Async instruction ...
    ended with CancelledError'."""
    p = _driver(tmp_path, 'fail')
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    assert out.splitlines() == ["ERROR invalid literal for int() with base 10: 'x'", 'OK 7']
    assert 'Compute Failed' not in err and 'Traceback' not in err and 'CancelledError' not in err, err


def test_ctrl_c_stops_a_local_clusters_running_tasks_now(tmp_path):
    """Ctrl-C while tasks ran: the cluster's close waited 4 s for them, then killed each worker with a warning
    ('Worker process still alive after 4.0 seconds, killing'); measured 4.2 s to exit."""
    psutil = pytest.importorskip('psutil')
    p = _driver(tmp_path, 'busy')
    kids = []
    try:
        assert p.stdout.readline().strip() == 'READY', p.stderr.read()[-2000:]
        kids = psutil.Process(p.pid).children(recursive=True)
        start = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - start
        assert p.returncode == 130, err[-2000:]
        assert took < 3.0, f'{took:.1f} s: waited for the running tasks'
        assert 'still alive' not in err and 'Traceback' not in err, err
        time.sleep(0.5)
        assert [k.pid for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        for k in kids:
            with contextlib.suppress(psutil.Error):
                k.kill()
