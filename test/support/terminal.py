"""A `vidseg` command with stderr on a pseudo-terminal (where progress bars are drawn), and the lines a terminal
would show of what it wrote."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from support.paths import ROOT


def vidseg_at_a_terminal(*argv: str, columns: int = 100, timeout: float = 300) -> tuple[int, str]:
    """`vidseg ARGV` with stderr on a ``columns``-wide pseudo-terminal: its exit status and what it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, columns, 0, 0))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    proc = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', *map(str, argv)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    raw = b''
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:     # EIO: the process closed its end
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    return proc.wait(timeout=timeout), raw.decode()


def screen(raw: str) -> list[str]:
    """The lines a terminal shows: a carriage return goes back to the line's start, later text overwrites."""
    lines = []
    for line in raw.replace('\r\n', '\n').split('\n'):
        shown = ''
        for part in line.split('\r'):
            shown = part + shown[len(part):]
        lines.append(shown.rstrip())
    return [line for line in lines if line]
