"""Ctrl-C on a `vidseg` command: one line on stderr saying what is kept, exit code 130, no traceback.

typer turns a KeyboardInterrupt into a silent exit 130 before the error contract sees it: every command
ended without a word, and an interrupted extract left a partial index nobody was told about.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from vidseg_ros.cli import app


def _open_writer(fifo, deadline_s: float = 60.0) -> int:
    """Open ``fifo`` for writing once a reader has it open (the command is then blocked reading it)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:     # ENXIO: no reader yet
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_sigint_in_a_real_process_is_one_line_and_exit_130(tmp_path):
    """A real SIGINT while `vidseg train` waits reading its config (a FIFO nobody writes yet)."""
    fifo = tmp_path / 'config.yaml'
    os.mkfifo(fifo)
    p = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', 'train', str(fifo)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        fd = _open_writer(fifo)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        os.close(fd)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert 'Traceback' not in err and out == ''
    line, = err.strip().splitlines()
    assert line.startswith('vidseg train: interrupted; ') and '--resume' in line, line


@pytest.mark.parametrize('command,argv,says', [
    ('extract', ['extract', '{d}', '--out', '{d}/out'], 'run the same command again'),
    ('propagate', ['propagate', '{d}'], 'labels written so far are kept'),
    ('noise-sigma', ['noise-sigma', '{d}'], None),
])
def test_ctrl_c_inside_any_command_says_what_is_kept(tmp_path, monkeypatch, command, argv, says):
    from vidseg_ros.tools import commands_data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(commands_data, command.replace('-', '_'), interrupted)
    r = CliRunner().invoke(app, [a.format(d=tmp_path) for a in argv])
    assert r.exit_code == 130
    line, = r.stderr.strip().splitlines()
    assert 'Traceback' not in r.stderr
    if says:
        assert line.startswith(f'vidseg {command}: interrupted; ') and says in line, line
    else:
        assert line == f'vidseg {command}: interrupted'


def test_debug_shows_the_interrupt(tmp_path, monkeypatch):
    from vidseg_ros.tools import commands_data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(commands_data, 'noise_sigma', interrupted)
    with pytest.raises(KeyboardInterrupt):      # raised with its traceback, not a line
        CliRunner().invoke(app, ['--debug', 'noise-sigma', str(tmp_path)])
