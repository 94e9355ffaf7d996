"""Where the data loop's independent tasks run: this process, a local process pool, or a Dask cluster.

Extraction (one task per bag) and propagation (one task per stretch between labelled frames) hand
their tasks to a ``concurrent.futures.Executor``. ``local`` is a process pool on this machine (or no
pool with one worker); ``dask`` is a Dask ``distributed`` cluster: a throw-away ``LocalCluster`` of
``workers`` processes, or an existing scheduler at ``address`` (``dask scheduler`` + ``dask worker``
on the fleet's machines, dask-jobqueue on SLURM/PBS, dask-kubernetes, ...). Dask re-runs the tasks of
a worker that dies on another worker; the outputs are files written atomically on a file system the
driver and the workers share, so the result is the same wherever a task ran.

Why Dask rather than Ray: pure-Python wheels (~10 MB with its dependencies against Ray's ~70 MB
binary), a local mode that is the same scheduler in a few processes (what the tests run), an
``Executor`` interface our process-pool code already speaks, and first-class launchers for the
batch systems robotics/ML labs run.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

from vidseg_ros.parent_death import die_with_parent

log = logging.getLogger(__name__)
EXECUTORS = ('local', 'dask')


class ExecutorError(ValueError):
    """The executor cannot be set up; the message says how to fix it."""


def check_executor(kind: str, workers: int, address: str = '') -> None:
    """Validate the options before any work starts (CLI errors are one line)."""
    if kind not in EXECUTORS:
        raise ExecutorError(f'executor {kind!r} is not one of {", ".join(EXECUTORS)}')
    if workers < 1:
        raise ExecutorError(f'workers must be >= 1, got {workers}')
    if address and kind != 'dask':
        raise ExecutorError('--address names a Dask scheduler: use it with --executor dask')


@contextlib.contextmanager
def task_executor(kind: str = 'local', workers: int = 1, address: str = '',
                  tasks: int | None = None) -> Iterator[Executor | None]:
    """An executor for independent tasks, or None (run them in this process: local with 1 worker).

    ``tasks``: how many tasks there will be, where known: no more worker processes are started (a pool of 32
    for 6 propagation jobs forked all 32; a local cluster of 8 for one bag took 7.4 s to start, against 1.9 s).
    """
    check_executor(kind, workers, address)
    if tasks is not None and not address:
        workers = max(1, min(workers, tasks))
    if kind == 'local':
        if workers <= 1:
            yield None
            return
        ctx = multiprocessing.get_context('fork' if 'fork' in multiprocessing.get_all_start_methods()
                                          else 'spawn')
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_start, initargs=(os.getpid(),))
        try:
            yield pool
        except BaseException as e:
            if not isinstance(e, Exception):   # Ctrl-C, sys.exit: stop now, not after the running tasks
                _stop_workers(pool)
            raise
        finally:
            pool.shutdown(cancel_futures=True)
        return
    with _dask_client(workers, address) as client, _worker_deaths_explained():
        yield client.get_executor(pure=False)


@contextlib.contextmanager
def _worker_deaths_explained():
    """A task whose every worker died running it (Dask's ``KilledWorker``, after
    ``distributed.scheduler.allowed-failures`` retries) as an ExecutorError: the CLI's one line and exit 2, not
    a bug's exit 1 with Dask's 400-character 'Attempted to run task ... on 4 different workers, ...'."""
    from distributed import KilledWorker
    try:
        yield
    except KilledWorker as e:
        failures = getattr(e, 'allowed_failures', None)
        times = f'{failures + 1} times' if isinstance(failures, int) else 'each time'
        raise ExecutorError(f'a task ended the Dask worker running it, {times} (out of memory? killed?): see the '
                            "workers' logs; the tasks finished before it are kept") from e


def _worker_start(parent_pid: int) -> None:
    """A pool worker's first step. Ctrl-C in a terminal reaches the whole process group: the workers leave
    it to the parent, which stops the pool (each worker printed a KeyboardInterrupt traceback). A worker
    also dies with its parent: after a SIGKILL of the parent they ran on, re-parented, at full CPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent_pid:    # the parent died before the line above: no signal will come
        os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now: they ignore SIGINT, and shutdown() waits for running tasks (a propagation
    job can take minutes). A task killed mid-write leaves at most a temporary file; its output is written
    atomically, so a re-run redoes it."""
    for process in list((getattr(pool, '_processes', None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):
            process.terminate()


@contextlib.contextmanager
def _dask_client(workers: int, address: str):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ExecutorError('executor dask needs Dask: pip install "dask[distributed]"') from None
    if address:
        try:
            client = Client(address, timeout='10s')
        except (OSError, TimeoutError) as e:
            raise ExecutorError(f'cannot reach the Dask scheduler at {address}: {e}') from None
        except ValueError as e:     # 'missing port number in address ...': which option, and what it should be
            raise ExecutorError(f'--address {address!r} is no Dask scheduler address ({e}); give one such as '
                                'tcp://head:8786') from None
        log.info('dask: %d worker(s) at %s', len(client.scheduler_info().get('workers', {})), address)
        try:
            yield client
        finally:
            client.close()
        return
    nanny_log = logging.getLogger('distributed.nanny')
    nanny_level = nanny_log.level
    with _quiet_distributed():
        cluster = _local_cluster(LocalCluster, workers)
        try:
            client = Client(cluster)
            try:
                client.register_plugin(_local_worker_plugin())
                yield client
            except BaseException as e:
                if not isinstance(e, Exception):   # Ctrl-C, sys.exit: stop now, not after the running tasks
                    # see _stop_cluster_workers; the scheduler, too, warned of a dying worker's last heartbeat
                    # ('Received heartbeat from unregistered worker', 1 Ctrl-C in 2); _quiet_distributed restores it
                    nanny_log.setLevel(logging.CRITICAL)
                    logging.getLogger('distributed').setLevel(logging.CRITICAL)
                    _stop_cluster_workers(cluster)
                raise
            finally:
                client.close()
        finally:
            try:
                cluster.close()
            except Exception as e:  # noqa: BLE001 - not to hide the run's own error (the workers die with us)
                # distributed's race: closing while a nanny restarts a dead worker ('AssertionError: can only
                # join a started process', 1 run in 5 after a KilledWorker) replaced the run's error
                log.warning('closing the local Dask cluster: %s', f'{type(e).__name__}: {e}'.rstrip(': '))
            nanny_log.setLevel(nanny_level)


# What a local cluster's workers log that the driver says itself (the task's error, as the one line of the
# CLI) or that is the expected end of a cancelled run: a worker printed a 'Compute Failed' block with the
# task's traceback for each failing task, and 'Async instruction ... ended with CancelledError' for each task
# cancelled by the end of the run (a failure elsewhere, Ctrl-C), and, now and then, a heartbeat's traceback when
# the run ends while a worker's heartbeat is on its way, or its answer 'Scheduler was unaware of this worker'
# (the scheduler lives in the driver: gone means done).
_REPORTED_BY_THE_DRIVER = ('Compute Failed', 'Async instruction for ',
                           'Failed to communicate with scheduler during heartbeat',
                           'Scheduler was unaware of this worker')


def _not_reported_by_the_driver(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_REPORTED_BY_THE_DRIVER)


def _local_worker_plugin():
    """A plugin set up on each worker of a local cluster (those it restarts after a death too): it leaves
    ``_REPORTED_BY_THE_DRIVER`` out of the worker's log (its other warnings, memory..., still show), and SIGINT
    to the driver, which stops its workers itself (``_stop_cluster_workers``), as the local pool's workers do.
    Ctrl-C in a terminal reaches every process of the group: a worker that got it closed on its own, racing
    the driver's stop, and printed tracebacks ('distributed.worker - ERROR', KeyboardInterrupt, CancelledError,
    a connection reset by the nanny) after the CLI's one line (1 CI run in ~10)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class LocalWorker(WorkerPlugin):
        name = 'vidseg-local-worker'

        def setup(self, worker):  # noqa: ARG002 - the same for every worker
            for name in ('distributed.worker', 'distributed.worker.state_machine'):
                logger = logging.getLogger(name)
                if _not_reported_by_the_driver not in logger.filters:
                    logger.addFilter(_not_reported_by_the_driver)
            if threading.current_thread() is threading.main_thread():    # where signals are handled
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    return LocalWorker()


def _stop_cluster_workers(cluster) -> None:
    """End a local cluster's workers now (Ctrl-C): closing it waited 4 s for the running tasks, then killed the
    workers with a warning each ('Worker process still alive after 4.0 seconds, killing'). The nannies' logs
    are off meanwhile (the caller): they log this kill, and the SIGINT the workers got from the terminal makes
    them close on their own as well, which a nanny logged as a CancelledError traceback. As with the pool, a
    task stopped mid-write leaves at most a temporary file."""
    import asyncio
    nannies = list(getattr(cluster, 'workers', {}).values())

    async def stop():
        await asyncio.gather(*(n.close(timeout=0.2, reason='interrupted') for n in nannies), return_exceptions=True)
    try:
        cluster.sync(stop)
    except Exception as e:  # noqa: BLE001 - closing the cluster below ends them all the same, only slower
        log.debug('stopping the local cluster workers: %s', e)


def _local_cluster(local_cluster, workers: int):
    """A throw-away cluster of ``workers`` processes on loopback, without dashboard (a local cluster is for
    one machine, and the tests); ExecutorError when it does not start (too few file descriptors, no
    loopback, ...): distributed's own report of that was ~130 lines of tracebacks and exit 1."""
    _check_open_files(workers)
    logger = logging.getLogger('distributed')
    level = logger.level
    logger.setLevel(logging.CRITICAL)    # its start-up errors: we say it in one line below
    try:
        # the scheduler's HTTP server (health, metrics) on a free port: on its default 8787, taken by another
        # cluster, distributed warned 'Port 8787 is already in use ...' on stderr
        return local_cluster(n_workers=workers, threads_per_worker=1, processes=True, host='127.0.0.1',
                             dashboard_address=None, silence_logs=logging.WARNING,
                             scheduler_kwargs={'dashboard_address': '127.0.0.1:0'})
    except Exception as e:  # noqa: BLE001 - whatever stopped it, the way out is the same
        raise ExecutorError(f'could not start a local Dask cluster ({_root_cause(e)}); use --executor '
                            'local') from e     # the chain: for --debug
    finally:
        logger.setLevel(level)


def _check_open_files(workers: int) -> None:
    """Refuse a cluster the open-file limit cannot hold: below it the scheduler's accept loop spun on
    'Too many open files' and logged it without end (a hang writing hundreds of MB to stderr), just
    above it a worker's start failed. Measured: a local cluster holds 15 + 9 per worker descriptors."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        need = len(os.listdir('/proc/self/fd')) + 15 + 9 * workers
    except (ImportError, OSError):     # not Linux: no limit to read here, the start itself will tell
        return
    if soft != resource.RLIM_INFINITY and soft < need:
        raise ExecutorError(f'could not start a local Dask cluster (the open-file limit is {soft}, {workers} '
                            f'worker(s) need at least {need}: raise ulimit -n); use --executor local')


def _root_cause(e: BaseException) -> str:
    """The first OS error behind ``e`` (``Too many open files`` behind 'Nanny failed to start'), else ``e``."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return f'{type(e).__name__}: {e}'.rstrip(': ')


@contextlib.contextmanager
def _quiet_distributed():
    """distributed's INFO lines (scheduler at, worker registered, ... 33 per run) through the CLI's root
    handler: only its warnings and errors show (a lost worker)."""
    logger = logging.getLogger('distributed')
    level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
