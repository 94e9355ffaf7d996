"""Entry of the node executables: a SIGINT/SIGTERM (or SIGHUP) during start-up ends the process with status 0.

A node module imports rclpy and torch first (seconds): a signal then arrived with Python's defaults and
ended the process with -2 and a KeyboardInterrupt traceback, -15, or -6 when the KeyboardInterrupt met
torch's C++ ("terminate called after throwing pybind11::error_already_set"), and launch respawns a
non-zero exit. This module imports only the standard library (and three standard-library-only
modules of the package: constants, parent_death, text) and installs quiet handlers before it
imports the node module; ``spin.run`` replaces them with its own once the node starts.

``python -m vidseg_ros.ros.<node>`` goes through here too: each node module starts, before its own heavy
imports, with ``if __name__ == '__main__': run_as_main(<module>)``, which imports the module again under its
name with the handlers installed and never returns.

lib/vidseg_ros/<node> runs ``python -c 'from vidseg_ros.ros.entry import main; main()' -m <module> ...``:
the command line keeps ``-m vidseg_ros.ros.<node>``, from which tools (and the launch tests) read which
node a process is. The console scripts call the functions named after the nodes.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

from vidseg_ros.constants import EXIT_CANNOT_START
from vidseg_ros.parent_death import die_with_parent
from vidseg_ros.text import one_line

PACKAGE = 'vidseg_ros.ros'


def _exit_now(signum, frame) -> None:
    """Exit 0 at once, letting out what was printed (os._exit skips Python's flush at exit).

    os._exit, not sys.exit: an exception raised inside an import (torch's C++ included) is what printed the
    traceback or aborted; nothing has started that needs cleaning up. The handler must never raise: Python
    runs it in the main thread, also inside a write to a stream that the signal interrupted (a print blocked
    on a full pipe), where that stream's flush raises 'RuntimeError: reentrant call' - it escaped into the
    print, a traceback and exit 1 instead of 0. A stream that cannot be flushed (that one, a closed or broken
    pipe) is left as it is; the exit happens whatever else fails. A flush blocked on a full pipe ends at the
    next signal: its write returns EINTR, this handler runs again inside it and exits.
    """
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - reentrant call, closed, broken pipe, None: exit all the same
                pass
    finally:
        os._exit(0)


def stop_with_parent() -> None:
    """Ask Linux for a SIGINT when the process that started this one dies: the node then stops as on Ctrl-C.

    ``ros2 launch`` exits at once on SIGTERM (what ``docker stop`` and systemd send), leaving its nodes
    running with no parent: the recorder went on writing a bag that had no metadata.yaml. The signal
    follows the thread that started the process (launch's event loop, the main thread).
    """
    die_with_parent(signal.SIGINT)    # where there is no prctl the node runs as before


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a node as Ctrl-C does: SIGINT, SIGTERM, and SIGHUP unless it is ignored.

    SIGHUP is what a closed terminal or a dropped ssh session sends to the processes it ran (`ros2 launch` and
    its nodes alike): its default ended the recorder at once, the bag without metadata.yaml and the messages
    of topics still settling (their first seconds) lost. Started under ``nohup`` (SIGHUP ignored), it stays
    ignored."""
    hangup = (signal.SIGHUP,) if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN else ()
    return (signal.SIGINT, signal.SIGTERM, *hangup)


def run_node(module: str) -> int:
    """Install the start-up handlers and the parent-death signal, then import ``module`` and return its
    ``main()``; 2 after one line on stderr when it cannot be imported."""
    for sig in stop_signals():
        signal.signal(sig, _exit_now)
    stop_with_parent()
    try:
        node_module = importlib.import_module(module)
    except (ImportError, OSError, MemoryError) as e:
        # a dependency missing (cv2, mcap) or a library that cannot be mapped (libtorch under `ulimit -v`): a
        # raw traceback and exit 1 said nothing more, and launch respawned the node into the same failure
        print(f'{module.rsplit(".", 1)[-1]}: cannot start: {one_line(str(e) or type(e).__name__, 300)}', file=sys.stderr)
        return EXIT_CANNOT_START
    return node_module.main()


def run_as_main(module: str) -> None:
    """``python -m MODULE``: the same start-up as the executables (``run_node``), then exit with its status.
    Called at the top of a node module, so only the standard library is imported before the handlers."""
    sys.exit(run_node(module))


def main() -> None:
    """``python -c '...main()' -m MODULE ARGS...``: run MODULE's main with ARGS as its command line."""
    if len(sys.argv) < 3 or sys.argv[1] != '-m':
        sys.exit(f'usage: python -c "from {__name__} import main; main()" -m {PACKAGE}.<node> [--ros-args ...]')
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    sys.exit(run_node(module))


def segment_node() -> int:
    return run_node(f'{PACKAGE}.segment_node')


def segment_lifecycle_node() -> int:
    return run_node(f'{PACKAGE}.segment_lifecycle_node')


def recorder_node() -> int:
    return run_node(f'{PACKAGE}.recorder_node')


def video_source_node() -> int:
    return run_node(f'{PACKAGE}.video_source_node')
