"""Process main loop of every vidseg node: clean stop on SIGINT/SIGTERM, exit status that says why.

One loop for segment_node, segment_lifecycle_node, recorder_node and video_source_node. A node may
define ``done() -> bool`` (stop spinning on its own: the video ended, the recording failed) and
``finish(code) -> int`` (clean-up while the context is still valid: close the bag, let the last
messages out; returns the exit code) and ``abandoned() -> bool`` (a thread of its own was left running at
``destroy_node``, stuck: the process then ends without waiting on it, see ``exit_without``).
"""
from __future__ import annotations

import atexit
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from vidseg_ros.constants import EXIT_CANNOT_START
from vidseg_ros.engine.memory import tune_allocator
from vidseg_ros.ros.core_logging import ForwardToRos
from vidseg_ros.ros.entry import stop_signals
from vidseg_ros.ros.startup import domain_id_problem, fd_limit_advice, init_failure, transport_warnings
from vidseg_ros.text import one_line


class WorkerDied(RuntimeError):
    """The inference worker ended while the node was serving: exit non-zero so a launch file respawns it."""


class StopRequest:
    """The SIGINT/SIGTERM handler: sets a plain attribute, taking no lock. It was ``threading.Event.set``, which
    takes the Event's lock: a second signal arriving while the first handler held it (launch sends SIGINT twice
    without a tty; SIGINT then SIGTERM) ran the handler again in the same thread, which waited on itself for
    good: the node ignored every later signal and a recorder never closed its bag (seen once under gdb)."""

    def __init__(self, signals=()):
        self.requested = False
        self.signals = signals   # the signals it handles (``entry.stop_signals``)

    def __call__(self, signum=None, frame=None) -> None:
        self.requested = True


def stop_on_signals() -> StopRequest:
    """Install the stop handler for SIGINT, SIGTERM and SIGHUP (``entry.stop_signals``; main thread only); the spin
    loop polls it."""
    stop = StopRequest(stop_signals())
    for sig in stop.signals:
        signal.signal(sig, stop)
    return stop


def _main_thread_stop() -> StopRequest | None:
    """spin.run's stop handler when called in the main thread while it is installed; None elsewhere (another
    thread, a node in a test): waits there are plain."""
    stop = signal.getsignal(signal.SIGINT)
    if isinstance(stop, StopRequest) and threading.current_thread() is threading.main_thread():
        return stop
    return None


class Interrupted(BaseException):
    """A SIGINT/SIGTERM came before or while the main thread waited for ``interruptible`` work (raised there).
    Not an Exception: no handler for failed work takes it. ``thread`` still runs the work, abandoned (None: the
    signal came first, the work never started)."""

    def __init__(self, thread: threading.Thread | None):
        super().__init__(thread.name if thread is not None else 'not started')
        self.thread = thread


def interruptible(work, name: str):
    """``work()``'s result, run in a thread (``name``) while the main thread waits for it or for a stop signal,
    which raises Interrupted: the node then answers what it was doing (a failed transition) and the spin loop
    stops as usual, the work left running (the node's ``abandoned()``). A model load in the main thread held
    the stop until it ended: torch.compile's warm-up took 42 s, and ros2 launch escalates to SIGTERM after 5 s,
    SIGKILL after 10. In other threads, or without spin.run's handler (a node in a test), ``work()`` itself."""
    stop = _main_thread_stop()
    if stop is None:
        return work()
    if stop.requested:
        raise Interrupted(None)
    outcome = {}

    def target() -> None:
        try:
            outcome['value'] = work()
        except BaseException as e:  # noqa: BLE001 - raised again in the waiting thread
            outcome['error'] = e
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    join_unless_stopped(thread, math.inf)
    if thread.is_alive():
        raise Interrupted(thread)
    if 'error' in outcome:
        raise outcome['error']
    return outcome['value']


def join_unless_stopped(thread: threading.Thread, timeout_s: float) -> None:
    """``thread.join(timeout_s)`` that returns early at a stop signal (spin.run's handler; a plain join elsewhere):
    the main thread waiting in a callback (a deactivate waiting STOP_WAIT_S for a stuck frame) saw the signal
    only after it, and the exit came 10 s + 2 s after Ctrl-C, past ros2 launch's escalation."""
    stop = _main_thread_stop()
    if stop is None:
        thread.join(timeout_s)
        return
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and not stop.requested and (left := deadline - time.monotonic()) > 0:
        thread.join(min(left, 0.05))   # the handler runs during the wait (Python retries the lock after it)


def start_ros(name: str, args=None):
    """``rclpy.init`` (its context manager), or None after one line on stderr saying why ROS cannot start:
    rcl's own failures (HOME unset or read-only, so no log folder; a bad ROS_DOMAIN_ID) were a 20-line
    traceback and exit 1, which launch respawns."""
    problem = domain_id_problem()
    if problem is None:
        try:
            return rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        except RuntimeError as e:   # rclpy's RCLError
            advice = fd_limit_advice(e)   # rcl's own words bury it
            problem = f'cannot start ROS: {advice}' if advice else init_failure(e)
            rclpy.try_shutdown()     # rcl may be up with only its logging missing
    print(f'{name}: {problem}', file=sys.stderr)
    return None


def run(node_cls, args=None, end_process: bool = False) -> int:
    """Spin the node until SIGINT/SIGTERM or ``node.done()``; 0 on a clean stop, 1 when the node failed
    while running (dead worker, recording error, a bug in a callback: with its traceback), 2 on a bad
    start-up (one line on stderr). ``end_process``: then end the process (``end_now``), for a node's ``main``.

    Our own signal handlers (not rclpy's) only set a flag, so a signal never interrupts clean-up (launch
    sends a second SIGINT to children when it runs without a terminal): the node finishes and is
    destroyed while the context is still valid, and a shutdown logs no errors from a publisher mid-frame.
    """
    code = 0
    tune_allocator()   # camera-sized buffers reused, not page-faulted afresh on every frame
    # rclpy's cleanup of a node rcl could not create (out of file descriptors): two lines of its own before ours
    warnings.filterwarnings('ignore', r'Failed to fini ', RuntimeWarning, r'rclpy\.node')
    context = start_ros(node_cls.__name__, args)
    if context is None:
        return EXIT_CANNOT_START
    # the context manager shuts the context down last, after the node is destroyed, however we leave
    with context:
        stop = stop_on_signals()
        node = None
        core_log = ForwardToRos(node_cls.__name__)   # the engine's and the writer's lines, as the node's
        try:
            node = node_cls()
            core_log.use(node.get_logger())
            done = getattr(node, 'done', lambda: False)
            # Callbacks only park messages (inference has its own thread): one executor thread dispatches
            # faster than MultiThreadedExecutor (measured transport p50 1.9 vs 3.1 ms at 640x480).
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            for warning in transport_warnings():   # the node has its FastDDS participant now
                node.get_logger().warning(warning)
        except Exception as e:  # noqa: BLE001 - start-up failures (bad model, bad params) exit with a clear line
            # one bounded line, escapes shown: the message may quote a file's or a message's text
            reason = fd_limit_advice(e) or one_line(f'{type(e).__name__}: {e}', 400)
            print(f'{node_cls.__name__}: {reason}', file=sys.stderr)
            code = EXIT_CANNOT_START
        try:
            while code == 0 and not stop.requested and rclpy.ok() and not done():
                executor.spin_once(timeout_sec=0.1)  # wakes at least every 0.1 s to see the stop flag
        except WorkerDied as e:
            print(f'{node_cls.__name__}: inference worker died: {e}', file=sys.stderr)
            code = 1
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:  # noqa: BLE001 - a bug in a callback while running: the whole story, then exit 1
            traceback.print_exc()
            print(f'{node_cls.__name__}: stopped by an unexpected error in a callback (a bug: please report it '
                  'with the traceback above)', file=sys.stderr)
            code = 1
        finally:
            for sig in stop.signals:
                # Ignored from here on: Python's exit would restore the default handlers, and a late second
                # signal (launch without a tty) would then kill the process mid-clean-up with status -2.
                signal.signal(sig, signal.SIG_IGN)
            try:
                if node is not None and getattr(node, 'finish', None) is not None:
                    code = node.finish(code)
            finally:
                try:
                    if node is not None:
                        node.destroy_node()
                finally:
                    core_log.close()   # the package logger as it was, however the node ended
    if node is not None and getattr(node, 'abandoned', lambda: False)():
        exit_without(code)
    if end_process:
        end_now(code)
    return code


def end_now(code: int) -> None:
    """End the process once the node is destroyed and the ROS context shut down: the atexit handlers (logging's
    flush, finalizers of temporary files) run, Python's finalization of its modules does not. With torch loaded
    that was a collection of the whole heap and the teardown of thousands of modules: 2.3 s on a loaded 2-core
    machine, 12 s beside four busy loops, after the node had said its last word, and ros2 launch sends SIGKILL
    10 s after its SIGINT (a kill a respawning launch reports as a crash). Nothing of ours needs it: files and
    bags are closed by ``finish`` and ``destroy_node``, the DDS participant went with the node."""
    try:
        atexit._run_exitfuncs()
    finally:
        exit_without(code)


def exit_without(code: int) -> None:
    """End the process now, leaving a stuck thread where it is (the node said so in its log); the ROS context is
    shut down, its log files flushed. A normal exit would wait on that thread or crash with it: a thread that
    leaves a C++ call (torch) after Python finalised is ended by pthread_exit, which a noexcept frame turns into
    std::terminate (abort, -6); libraries' static destructors may join their pools, where it is stuck."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - closed or broken: exit all the same
            pass
    os._exit(code)
