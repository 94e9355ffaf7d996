"""The executors at failure: a task that raises on a local Dask cluster, Ctrl-C while Dask tasks run, and
Ctrl-C reaching the executor of a propagation run (which then stops its workers at once)."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
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


@pytest.mark.parametrize('workers_first', [False, True], ids=['group', 'workers_first'])
def test_ctrl_c_stops_a_local_clusters_running_tasks_now(tmp_path, workers_first):
    """Ctrl-C while tasks ran: the cluster's close waited 4 s for them, then killed each worker with a warning
    ('Worker process still alive after 4.0 seconds, killing'); measured 4.2 s to exit. A terminal's Ctrl-C
    reaches every process of the group, the workers now and then before the driver (``workers_first``): they
    closed on their own and printed tracebacks (KeyboardInterrupt, CancelledError; 1 CI run in ~10)."""
    psutil = pytest.importorskip('psutil')
    p = _driver(tmp_path, 'busy')
    kids = []
    try:
        assert p.stdout.readline().strip() == 'READY', p.stderr.read()[-2000:]
        kids = psutil.Process(p.pid).children(recursive=True)
        if workers_first:
            for kid in kids:
                kid.send_signal(signal.SIGINT)
            time.sleep(1.0)
        start = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - start
        assert p.returncode == 130, err[-2000:]
        # What tells the old close (it waited 4 s for the running tasks, then killed each worker) is its warning below,
        # not a time: a loaded CI machine stretches both (0.3-1.1 s here now, 4.2 s before). The bound is a backstop.
        assert took < 30, f'{took:.1f} s to stop'
        # nothing but the load's own ('Event loop was unresponsive in Scheduler for 3.2s', on a busy machine): not
        # 'still alive after 4.0 seconds', tracebacks, 'Received heartbeat from unregistered worker', ...
        assert [line for line in err.splitlines() if 'Event loop was unresponsive' not in line] == [], err
        time.sleep(0.5)
        assert [k.pid for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        for k in kids:
            with contextlib.suppress(psutil.Error):
                k.kill()


def test_a_task_that_kills_its_workers_is_an_executor_error():
    """Dask gives up on a task after its 4th worker died running it (OOM, a crash): its KilledWorker ended the CLI
    as a bug (exit 1) with 'Attempted to run task ... on 4 different workers, but all those workers died ...'."""
    pytest.importorskip('distributed')
    from vidseg_ros.data.executors import ExecutorError, task_executor
    with pytest.raises(ExecutorError, match=r'^a task ended the Dask worker running it, 4 times \(out of memory'):
        with task_executor('dask', 1) as pool:
            pool.submit(os._exit, 1).result(timeout=60)


class FakePool:
    """A pool's map as concurrent.futures has it: every job submitted, the results in order."""

    def map(self, fn, args):
        futures = [self.submit(fn, a) for a in args]
        return (f.result() for f in futures)


class InterruptedPool(FakePool):
    """A pool whose first result is a Ctrl-C, as when the user presses it while the jobs run."""

    def submit(self, fn, arg):  # noqa: ARG002 - nothing runs
        future = Future()
        future.set_exception(KeyboardInterrupt())
        return future


class FirstJobFailsPool(FakePool):
    """A pool whose first job fails (an unreadable frame) while the others finish."""

    def submit(self, fn, arg):
        future = Future()
        if not hasattr(self, 'started'):
            self.started = True
            future.set_exception(ValueError('cannot read image file f.png'))
        else:
            future.set_result(fn(arg))
        return future


def _dataset(tmp_path, frames: int, human: tuple[int, ...]):
    import numpy as np

    from vidseg_ros.data.bags.from_frames import write_bag
    from vidseg_ros.data.datasets.extract import extract
    from vidseg_ros.data.datasets.label_import import import_labels
    from vidseg_ros.data.datasets.labels import write_label
    from vidseg_ros.data.datasets.layouts import read_index

    rng = np.random.default_rng(0)
    write_bag(tmp_path / 'bag', [[rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(frames)]])
    extract([tmp_path / 'bag'], tmp_path / 'ds')
    recs = read_index(tmp_path / 'ds')
    for i in human:
        write_label(tmp_path / 'lab' / f'{recs[i].stamp_ns}.png', np.zeros((32, 48), np.uint8))
    import_labels(tmp_path / 'ds', tmp_path / 'lab', class_names=['bg', 'obj'])
    return tmp_path / 'ds'


def test_ctrl_c_in_a_propagation_run_reaches_its_executor(tmp_path, monkeypatch):
    """The run closed its executor as if all had gone well (ExitStack.close() in a finally): the executor never
    saw the Ctrl-C, so the local pool waited for each running stretch (4.9 s measured for 50-frame stretches at
    96x128; minutes for real ones) and the Dask cluster its 4 s, instead of stopping its workers at once."""
    from vidseg_ros.data.datasets.layouts import read_index
    from vidseg_ros.data.labelling import run
    from vidseg_ros.data.labelling.propagate import PropagateConfig

    ds = _dataset(tmp_path, 4, (0, 3))
    seen = []

    @contextlib.contextmanager
    def executor(*args, **kwargs):  # noqa: ARG001
        try:
            yield InterruptedPool()
        except BaseException as e:
            seen.append(type(e))
            raise
    monkeypatch.setattr(run, 'task_executor', executor)
    with pytest.raises(KeyboardInterrupt):
        run.propagate_dataset(ds, PropagateConfig(), workers=2)
    assert seen == [KeyboardInterrupt]
    assert [r.label_source for r in read_index(ds)] == ['human', 'none', 'none', 'human']


def test_a_failed_job_leaves_the_finished_ones_indexed(tmp_path, monkeypatch):
    """Two sequences, one job each, an unreadable frame in the first: the run raised at once, the other job ran
    on and wrote its 177 labels, none of them indexed (the next run computed them again). Now the other jobs
    finish and are indexed, then the error is raised."""
    from vidseg_ros.data.datasets.layouts import read_index
    from vidseg_ros.data.labelling import run
    from vidseg_ros.data.labelling.propagate import PropagateConfig

    ds = _dataset(tmp_path, 11, (0, 2, 4, 6, 8, 10))     # 2 jobs (4 labels per job): frames 0-8 and 8-10
    monkeypatch.setattr(run, 'task_executor', lambda *a, **k: contextlib.nullcontext(FirstJobFailsPool()))
    with pytest.raises(ValueError, match='cannot read image file f.png'):
        run.propagate_dataset(ds, PropagateConfig(), workers=2)
    assert [r.label_source for r in read_index(ds)] == ['human', 'none'] * 4 + ['human', 'propagated', 'human']


def test_no_more_workers_than_tasks():
    """--workers 32 for 6 propagation jobs forked 32 processes; a local Dask cluster of 8 for one bag took 7.4 s
    to start (1.9 s with 1)."""
    from vidseg_ros.data.executors import task_executor
    with task_executor('local', 32, tasks=3) as pool:
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
        assert len(pool._processes) == 3
    with task_executor('local', 8, tasks=1) as pool:
        assert pool is None          # one task: in this process
    with task_executor('local', 4, tasks=0) as pool:
        assert pool is None
    if pytest.importorskip('distributed'):
        with task_executor('dask', 4, tasks=1) as pool:
            assert len(pool._client.scheduler_info()['workers']) == 1


def test_a_propagation_run_starts_no_more_workers_than_jobs(tmp_path, monkeypatch):
    from vidseg_ros.data.labelling import run
    from vidseg_ros.data.labelling.propagate import PropagateConfig

    ds = _dataset(tmp_path, 4, (0, 3))      # one job
    real, pools = run.task_executor, []

    @contextlib.contextmanager
    def spy(*args, **kwargs):
        with real(*args, **kwargs) as pool:
            pools.append(pool)
            yield pool
    monkeypatch.setattr(run, 'task_executor', spy)
    assert run.propagate_dataset(ds, PropagateConfig(), workers=8)['propagated'] == 2
    assert pools == [None]      # the one job in this process, not a pool of 8 forked workers


@pytest.mark.parametrize('address', ['garbage', 'foo://x'])
def test_a_malformed_scheduler_address_names_the_option(address):
    """'garbage' ended as 'missing port number in address 'garbage'', not saying which option or what to give."""
    pytest.importorskip('distributed')
    from vidseg_ros.data.executors import ExecutorError, task_executor
    with pytest.raises(ExecutorError, match=rf"^--address '{address}' is no Dask scheduler address \(.+\); give one "
                                            r'such as tcp://head:8786$'):
        with task_executor('dask', 1, address):
            pass
