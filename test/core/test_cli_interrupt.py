"""Ctrl-C on a `vidseg` command: one line on stderr saying what is kept, exit code 130, no traceback.

typer turns a KeyboardInterrupt into a silent exit 130 before the error contract sees it: every command
ended without a word, and an interrupted extract left a partial index nobody was told about.
"""
import os
import signal
import subprocess
import sys

import pytest
from support.eval_data import tiny_train_config
from support.paths import ROOT
from support.waiting import wait_until
from typer.testing import CliRunner

from vidseg_ros.cli import app


def test_sigint_in_a_real_process_is_one_line_and_exit_130(tmp_path):
    """A real SIGINT while `vidseg train` runs (its first epoch saved, many to go). It waited reading a FIFO
    config before; a FIFO config is refused since 498c636."""
    config = tiny_train_config(tmp_path, epochs=1000)
    p = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', 'train', str(config)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        wait_until(lambda: (tmp_path / 'runs' / 't' / 'last.pt').is_file() or p.poll() is not None, 300,
                   'the first epoch saved')
        assert p.poll() is None, p.stderr.read()[-2000:]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 130, err
    assert 'Traceback' not in err and out == ''
    *logged, line = err.strip().splitlines()
    assert all(n.startswith('INFO vidseg_ros.') for n in logged), err     # train logs each epoch
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
