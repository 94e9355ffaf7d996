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

    class HostileStart(Node):
        def __init__(self):
            raise ValueError('model m\\x1b]0;owned\\x07.pt\\n[ERROR] [launch]: fake ' + 'y' * 100_000 + ' is bad')

    sys.exit(run({'buggy': Buggy, 'bad_start': BadStart, 'hostile': HostileStart}[sys.argv[1]]))
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


def test_a_start_up_failure_quoting_hostile_text_is_one_bounded_clean_line():
    """The start-up line printed the exception whole: a 100 kB message, an ESC sequence (terminal title) and a
    fake second log line from a quoted file or message reached stderr raw."""
    r = run_node('hostile')
    assert r.returncode == 2
    line = r.stderr.strip()
    assert '\n' not in line and len(line) < 450 and line.endswith(' is bad'), line[:500]
    assert not [c for c in line if ord(c) < 32 or 127 <= ord(c) < 160], repr(line[:500])
    assert line.startswith('HostileStart: ValueError: model m\\x1b]0;owned\\x07.pt [ERROR]'), line[:500]


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


@pytest.mark.parametrize('node', ['segment_node', 'segment_lifecycle_node', 'recorder_node', 'video_source_node'])
def test_a_signal_during_python_dash_m_imports_is_exit_0(node, tmp_path):
    """`python -m vidseg_ros.ros.<node>` (the documented way to run a node from a checkout) imported rclpy and
    torch before entry's handlers: a SIGINT then gave -2 and a KeyboardInterrupt traceback."""
    cv2.imwrite(str(tmp_path / 'frame.png'), np.zeros((8, 8, 3), np.uint8))
    args = {'video_source_node': ['-p', f'source:={tmp_path}', '-p', 'loop:=true'],
            'recorder_node': ['-p', f'output_dir:={tmp_path}', '-p', 'min_free_disk_bytes:=0']}.get(node, [])
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.Popen([sys.executable, '-m', f'vidseg_ros.ros.{node}', '--ros-args', *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT),
                            preexec_fn=_default_signals)
    time.sleep(0.5)   # importing rclpy (and torch): the node has not started
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and 'Traceback' not in out and 'KeyboardInterrupt' not in out, out


def _default_signals() -> None:
    """As launch starts its nodes (a test run in the background inherits SIGINT ignored)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def test_a_node_stops_cleanly_when_its_parent_dies(tmp_path):
    """`ros2 launch` exits at once on SIGTERM (docker stop, systemd) and left its nodes running: the recorder
    kept writing a bag without metadata.yaml. Its parent here is killed outright; the recorder must stop as on
    Ctrl-C and close its bag."""
    env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}'}
    node = [str(ROOT / 'scripts' / 'recorder_node'), '--ros-args', '-p', f'output_dir:={tmp_path}',
            '-p', 'bag_prefix:=orphan', '-p', 'min_free_disk_bytes:=0']
    parent = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
        import signal, subprocess, sys, time
        def defaults():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
        child = subprocess.Popen({node!r}, stdout=open({str(tmp_path / 'node.log')!r}, 'w'),
                                 stderr=subprocess.STDOUT, preexec_fn=defaults)
        print(child.pid, flush=True)
        time.sleep(600)
        ''')], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while 'recording to' not in (tmp_path / 'node.log').read_text():
            assert time.monotonic() < deadline, (tmp_path / 'node.log').read_text()
            time.sleep(0.2)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while _alive(child):
            assert time.monotonic() < deadline, 'the node outlived its parent'
            time.sleep(0.1)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    (bag,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith('orphan')]
    assert (bag / 'metadata.yaml').exists(), (tmp_path / 'node.log').read_text()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (an orphan is reaped by init, so it disappears once it exits)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().split(')')[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != 'Z'


def _node_env(**changes) -> dict:
    """This test run's environment with the checkout first on PYTHONPATH; a value of None removes the name."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    for name, value in changes.items():
        env.pop(name, None) if value is None else env.__setitem__(name, value)
    return env


def _run_briefly(args, env, cwd, timeout=40) -> tuple[int | None, str, str]:
    """(exit status or None when still running after ``timeout`` s, stdout, stderr); a node that kept
    running (the old code on ROS_DOMAIN_ID=-1) is stopped."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(cwd))
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return None, out, err


ROS_CANNOT_START = {   # environment -> words of the one line
    'home_unset': ({'HOME': None, 'ROS_HOME': None, 'ROS_LOG_DIR': None},
                   'cannot start ROS: failed to initialize logging'),
    'log_dir_not_a_folder': ({'ROS_LOG_DIR': '/dev/null/log'}, "log directory '/dev/null/log': Not a directory"),
    'domain_abc': ({'ROS_DOMAIN_ID': 'abc'}, "ROS_DOMAIN_ID='abc' is not a ROS domain"),
    'domain_minus_1': ({'ROS_DOMAIN_ID': '-1'}, "ROS_DOMAIN_ID='-1' is not a ROS domain"),
    'domain_300': ({'ROS_DOMAIN_ID': '300'}, "ROS_DOMAIN_ID='300' is not a ROS domain"),
}


@pytest.mark.parametrize('case', list(ROS_CANNOT_START))
def test_ros_that_cannot_start_is_one_line_and_exit_2(case, tmp_path):
    """HOME unset or read-only (rcl cannot make ~/.ros/log), ROS_DOMAIN_ID=abc: a 20-line RCLError traceback,
    exit 1, and launch respawned the node into the same failure; -1 ran on some other domain without a word,
    300 made FastDDS end the process. Now one line that says what to set, exit 2."""
    changes, words = ROS_CANNOT_START[case]
    cv2.imwrite(str(tmp_path / 'frame.png'), np.zeros((8, 8, 3), np.uint8))
    code, out, err = _run_briefly([sys.executable, '-m', 'vidseg_ros.ros.video_source_node', '--ros-args',
                                   '-p', f'source:={tmp_path}', '-p', 'loop:=true'], _node_env(**changes), tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, out, err)
    assert err.startswith('VideoSourceNode: ') and words in err, err
    if 'log' in case:
        assert err.strip().endswith('set ROS_LOG_DIR (or ROS_HOME) to a writable folder'), err


@pytest.mark.parametrize('case', ['home_unset', 'domain_abc'])
def test_the_demo_that_cannot_start_ros_is_one_line_exit_2_and_starts_nothing(case, tmp_path):
    changes, words = ROS_CANNOT_START[case]
    code, out, err = _run_briefly([sys.executable, '-m', 'vidseg_ros.ros.demo', '--video', str(tmp_path),
                                   '--out', str(tmp_path / 'out')], _node_env(**changes), tmp_path)
    assert code == 2 and err.strip() == err.strip().splitlines()[0] and words in err, (code, out[-2000:], err)
    assert not (tmp_path / 'out').exists()    # no node was started, nothing written


def _absent_module(folder: Path, module: str) -> Path:
    """A package named ``module`` in ``folder`` whose import fails, as when it is not installed."""
    (folder / module).mkdir(parents=True)
    (folder / module / '__init__.py').write_text(f'raise ImportError("No module named {module!r} (simulated)")\n')
    return folder


@pytest.mark.parametrize('node,module', [('segment_node', 'cv2'), ('recorder_node', 'mcap'),
                                         ('video_source_node', 'cv2')])
@pytest.mark.parametrize('how', ['python_dash_m', 'executable'])
def test_a_node_whose_import_fails_is_one_line_and_exit_2(node, module, how, tmp_path):
    """cv2 or mcap absent, or libtorch that cannot be mapped (`ulimit -v`): a raw traceback and exit 1,
    which launch respawns. Now `<node>: cannot start: <reason>`, exit 2."""
    stub = _absent_module(tmp_path / 'stub', module)
    env = _node_env(PYTHONPATH=os.pathsep.join([str(stub), str(ROOT)]),
                    PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
    args = ([sys.executable, '-m', f'vidseg_ros.ros.{node}'] if how == 'python_dash_m'
            else [str(ROOT / 'scripts' / node)])
    code, out, err = _run_briefly(args, env, tmp_path)
    assert code == 2, (code, out, err)
    assert err.strip() == f"{node}: cannot start: No module named '{module}' (simulated)", err


def _handler_reentered_on_every_line(handler, timeout_s: float = 5.0) -> bool:
    """Whether ``handler`` returns when a second signal arrives at every line of its first run: Python runs a
    signal's handler in the main thread between two lines of whatever runs there, the first handler included.
    Simulated in a thread of its own (a trace function calls the handler again, once, at each line); False when
    that thread is still waiting after ``timeout_s``."""
    import threading

    def nested(frame, event, arg):
        if event == 'line' and not depth:
            depth.append(1)
            handler(signal.SIGINT, None)
            depth.pop()
        return nested
    depth: list = []

    def first():
        sys.settrace(lambda frame, event, arg: nested)
        try:
            handler(signal.SIGINT, None)
        finally:
            sys.settrace(None)
    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


def test_a_second_signal_during_the_stop_handler_cannot_hang_the_node():
    """The handler was ``threading.Event.set``, which holds the Event's lock: a second signal arriving while it
    did (launch sends SIGINT twice without a tty) waited on that lock in the same thread for good; the recorder
    then ignored every signal and never closed its bag (seen once, under gdb). The same harness hangs on
    Event.set, so it can tell."""
    import threading
    from vidseg_ros.ros.spin import stop_on_signals
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop = stop_on_signals()
        assert signal.getsignal(signal.SIGINT) is stop and signal.getsignal(signal.SIGTERM) is stop
        assert _handler_reentered_on_every_line(stop) and stop.requested
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    event = threading.Event()
    assert not _handler_reentered_on_every_line(lambda *_: event.set(), timeout_s=2.0)


_PRINTS_UNTIL_SIGNALLED = textwrap.dedent('''
    import signal, sys
    from vidseg_ros.ros import entry
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, entry._exit_now)
    print('printed before the signal')
    sys.stderr.write('ready\\n')
    sys.stderr.flush()
    if sys.argv[1] == 'flood':
        while True:
            print('x' * 1000)   # the pipe is not read: a write blocks, and the signal comes inside it
    signal.pause()
''')


@pytest.mark.parametrize('case', ['flood', 'idle'])
def test_a_signal_inside_a_print_during_start_up_still_exits_0(case):
    """entry's start-up handler flushed stdout: a signal inside a print blocked on a full pipe (a log reader
    that stalls) ran it within that write, the flush raised 'RuntimeError: reentrant call' into the print:
    a traceback and exit 1 (launch respawns it). 'idle': what the flush is for, text printed before the signal
    (block-buffered into a pipe) is not lost by os._exit."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}   # as launch runs nodes: buffered
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    proc = subprocess.Popen([sys.executable, '-c', _PRINTS_UNTIL_SIGNALLED, case], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=str(ROOT), preexec_fn=_default_signals)
    try:
        assert proc.stderr.readline() == b'ready\n'
        time.sleep(1.0)   # 'flood': the 64 kB pipe fills within milliseconds and the print blocks
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)   # reading stdout: a process that did not exit can end
    finally:
        proc.kill()
    assert proc.returncode == 0 and b'Traceback' not in err, (proc.returncode, err.decode()[-2000:])
    assert out.startswith(b'printed before the signal\n'), out[:100]


def test_the_start_up_handler_exits_0_whatever_a_flush_raises(monkeypatch):
    """Neither a reentrant flush nor a missing stream can escape the handler; stderr is flushed after a stdout
    that could not be."""
    from vidseg_ros.ros import entry
    flushed, exits = [], []

    class Stream:
        def __init__(self, name, error=None):
            self.name, self.error = name, error

        def flush(self):
            if self.error:
                raise self.error
            flushed.append(self.name)
    monkeypatch.setattr(entry.os, '_exit', exits.append)
    for stdout in (Stream('out', RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")),
                   Stream('out', BrokenPipeError(32, 'Broken pipe')), None):
        monkeypatch.setattr(sys, 'stdout', stdout)
        monkeypatch.setattr(sys, 'stderr', Stream('err'))
        entry._exit_now(signal.SIGINT, None)
    assert exits == [0, 0, 0] and flushed == ['err', 'err', 'err']
