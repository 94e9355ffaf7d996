"""Run `ros2 launch` / `ros2 <verb>` for real (launch_ros + ros2cli: a ROS install or ../shared/ros2_extras)."""
from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.paths import DATA

BIN = Path(sys.executable).parent
NEED_EXTRAS = ('launch_ros / ros2cli not installed: `make test` installs them from ../shared/ros2_extras '
               'when that folder exists (a plain clone has none)')


def require_launch():
    pytest.importorskip('launch_ros', reason=NEED_EXTRAS)
    if not (BIN / 'ros2').exists():
        pytest.skip(NEED_EXTRAS)


def real_clip() -> str:
    """CamVid val frames (a 15 Hz drive) when ../shared/data has them, else Debian's opencv-doc clip."""
    from vidseg_ros.ros.demo import fetch_opencv_sample
    camvid = DATA / 'camvid' / 'val'
    if camvid.is_dir():
        return str(camvid)
    try:
        return str(fetch_opencv_sample())
    except SystemExit as e:
        pytest.skip(f'no real clip: {e}')


def ros2(*args: str, timeout: float = 60.0) -> str:
    """`ros2 ...` output; fails the test with the output when it exits non-zero."""
    if args[:1] == ('param',) and len(args) > 1:
        # `ros2 param` waits 1 s for the node by default: on a loaded machine discovery takes longer
        args = (*args[:2], '--timeout', '15', *args[2:])
    for _ in range(3):   # `ros2 param` on a machine running six nodes on two cores: discovery can take longer still
        r = subprocess.run([str(BIN / 'ros2'), *args], capture_output=True, text=True, timeout=timeout)
        if 'Wait for service timed out' not in r.stderr:
            break
    assert r.returncode == 0, f'ros2 {" ".join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}'
    return r.stdout


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def started(log: str, executable: str) -> int:
    """How many times launch started ``executable`` (each start has its own ``name-N`` label)."""
    return len(re.findall(rf'\[{re.escape(executable)}-\d+\]: process started with pid', log))


class Launch:
    """`ros2 launch vidseg_ros FILE args...` as from a terminal: its own process group, stdin a tty.
    A terminal's Ctrl-C reaches the whole group and launch, seeing a tty, does not signal its children
    a second time (without a tty it would: `--noninteractive`).

    SIGINT starts at its default, as in a terminal: a test run started as a background job of a script
    (`make test &`) inherits SIGINT ignored, and launch, whose handler only chains onto Python's, then
    never sees a Ctrl-C while its nodes (own handlers) do."""

    def __init__(self, file: str | Path, args: dict, log_path: Path, tty: bool = True):
        """``file``: one of our launch files by name, or a Path: a user's own launch file (`ros2 launch PATH`)."""
        self.log_path = log_path
        self._log = open(log_path, 'w')
        target = [str(file)] if isinstance(file, Path) else ['vidseg_ros', file]
        cmd = [str(BIN / 'ros2'), 'launch', *target, *[f'{k}:={v}' for k, v in args.items()]]
        self._tty, stdin = pty.openpty() if tty else (None, subprocess.DEVNULL)
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
        if tty:
            os.close(stdin)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc.poll() is None, f'launch exited ({self.proc.returncode}):\n{self.log()[-4000:]}'
            assert time.monotonic() < deadline, f'no {text!r} in the launch output:\n{self.log()[-4000:]}'
            time.sleep(0.2)

    def children(self) -> dict:
        """{executable name: psutil.Process} of the nodes launch started."""
        import psutil
        nodes = {}
        for p in psutil.Process(self.proc.pid).children():
            cmd = p.cmdline()  # python3 -m vidseg_ros.ros.<node> after the lib/ launcher's exec
            name = cmd[cmd.index('-m') + 1].rsplit('.', 1)[-1] if '-m' in cmd else Path(cmd[1]).name
            nodes[name] = p
        return nodes

    def _group(self) -> list[str]:
        import psutil
        found = []
        for p in psutil.process_iter(['pid', 'cmdline']):
            try:
                if os.getpgid(p.pid) == self.proc.pid:
                    found.append(' '.join(p.info['cmdline'] or []))
            except (ProcessLookupError, PermissionError):
                pass
        return found

    def interrupt(self, timeout: float = 40.0) -> int:
        """Ctrl-C for the whole group; kills it (and fails) when launch does not end in time."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                seen = 'user interrupted with ctrl-c' in self.log()
                raise AssertionError(f'launch did not end {timeout:.0f} s after SIGINT '
                                     f'({"it logged the SIGINT" if seen else "launch never saw the SIGINT"}):\n'
                                     f'{self.log()[-4000:]}')
        self.left_behind = self._group()
        if self.left_behind:  # nodes a failed launch left behind are still in its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()
            if self._tty is not None:
                os.close(self._tty)
        return self.proc.returncode


def error_lines(log: str) -> dict[str, list[str]]:
    """ERROR/Traceback lines of a launch output, by the process that printed them ('launch' = launch)."""
    out: dict[str, list[str]] = {}
    for line in log.splitlines():
        if '[ERROR]' in line or 'Traceback' in line:
            m = re.match(r'(?:\[ERROR\] )?\[(\w+)-\d+\]', line)  # its own output, or launch's line about it
            out.setdefault(m.group(1) if m else 'launch', []).append(line)
    return out
