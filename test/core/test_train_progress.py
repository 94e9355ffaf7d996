"""`vidseg train` at a terminal draws a progress bar on stderr: log lines and the one-line error of a run that stops
must each start a line of their own. They were written after the bar's text, on its line ('epoch 1/2: 0step
[00:00, ?step/s]vidseg train: error: the loss became nan ...')."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from support.eval_data import tiny_train_config

pytest.importorskip('tqdm')
ROOT = Path(__file__).resolve().parents[2]


def _train_at_a_terminal(config: Path, *args: str) -> tuple[int, str]:
    """`vidseg train CONFIG ARGS` with stderr on a 100-column pseudo-terminal: its exit status and what it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    proc = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', 'train', str(config), *args],
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
    return proc.wait(timeout=120), raw.decode()


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows: a carriage return goes back to the line's start, later text overwrites."""
    lines = []
    for line in raw.replace('\r\n', '\n').split('\n'):
        shown = ''
        for part in line.split('\r'):
            shown = part + shown[len(part):]
        lines.append(shown.rstrip())
    return [line for line in lines if line]


@pytest.mark.parametrize('args,last', [((), 'INFO vidseg_ros.training.loop: wrote'),
                                        (('--set', 'lr=1e30'), 'vidseg train: error: the loss became nan')])
def test_log_lines_and_the_error_start_a_line_under_the_progress_bar(tmp_path, args, last):
    status, raw = _train_at_a_terminal(tiny_train_config(tmp_path, 2), *args)
    assert 'epoch 1/2: ' in raw                                       # the bar was drawn
    shown = _screen(raw)
    assert status == (2 if args else 0), shown
    assert all(line.startswith(('INFO ', 'vidseg train: error: ')) for line in shown), shown
    assert shown[-1].startswith(last)
