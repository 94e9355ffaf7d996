"""SIGTERM on a `vidseg` command takes Ctrl-C's way out: the same cleanup, one line on stderr saying it was
terminated, what is kept and how to go on, and exit code 143 (128 + 15).

`kill`, `timeout`, systemd, `docker stop` and a cancelled CI job all send SIGTERM. Only `vidseg export` handled
it; every other command died at once with no word: extract left its frames unindexed and a hidden `.<hex>.tmp`,
bag-from-frames a partial bag its re-run refused ('exists and is no finished bag'), label-import hidden
`.<stamp>.import.png` files, eval a half run folder, make-variant half a dataset. Each test starts the command as a
real process on real small data, waits until its work shows on disk (with work left: the run cannot end first),
sends SIGTERM and checks what is left and that the way on the line names works.
"""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.eval_data import folder_dataset, tiny_train_config
from support.paths import ROOT
from support.waiting import wait_until
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.layouts import EXTRACTING_NAME, read_index

EXPECTED_HIDDEN = {'.vidseg.lock', EXTRACTING_NAME}     # kept after Ctrl-C as well (a lock file, "partial" marker)


def _noise(n, hw=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for _ in range(n)]


def _vidseg(*argv, **kw):
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, 'PYTHONPATH': str(ROOT)}, **kw)


def _terminated(argv, mid_work, what: str, timeout: float = 300):
    """Run ``vidseg ARGV`` until ``mid_work()`` holds, SIGTERM it: (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        wait_until(lambda: mid_work() or proc.poll() is not None, timeout, what)
        if proc.poll() is not None:
            pytest.fail(f'the command ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}')
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert out == ''
    return proc.returncode, err


def _one_line(err: str, command: str) -> str:
    """The command's one line about the SIGTERM, its last on stderr; before it only the run's own log lines
    (train logs each epoch)."""
    assert 'Traceback' not in err, err
    *logged, line = err.strip().splitlines()
    assert all(n.startswith('INFO vidseg_ros.') for n in logged), err
    assert line.startswith(f'vidseg {command}: terminated (SIGTERM)'), line
    return line


def _debris(root: Path) -> list[str]:
    """Hidden or temporary files under ``root`` other than the ones a Ctrl-C keeps too."""
    return sorted(str(p.relative_to(root)) for p in root.rglob('*')
                  if (p.name.startswith('.') and p.name not in EXPECTED_HIDDEN) or '.tmp' in p.name
                  or '.partial' in p.name)


def test_extract_terminated_keeps_its_frames_indexed_and_resumes(tmp_path):
    write_bag(tmp_path / 'bag', [_noise(600)])
    out = tmp_path / 'out'
    rc, err = _terminated(['extract', tmp_path / 'bag', '--out', out],
                          lambda: len(list(out.rglob('*.png'))) >= 3, 'frames written')
    assert rc == 143, err
    assert 'the frames written so far are kept; run the same command again' in _one_line(err, 'extract')
    assert _debris(out) == []
    assert 3 <= len(read_index(out)) < 600          # the frames written so far, indexed
    again = _vidseg('extract', tmp_path / 'bag', '--out', out)
    assert again.returncode == 0, again.stderr
    assert len(read_index(out)) == 600 and not (out / EXTRACTING_NAME).exists()


def test_extract_with_a_pool_terminated_leaves_no_worker_behind(tmp_path):
    """Two bags on two pool workers: the workers are stopped with the run, none is left running."""
    write_bag(tmp_path / 'a', [_noise(400)])
    write_bag(tmp_path / 'b', [_noise(400, seed=1)])
    out = tmp_path / 'out'
    argv = ['extract', tmp_path / 'a', tmp_path / 'b', '--out', out, '--workers', '2']
    proc = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        wait_until(lambda: len(list(out.rglob('*.png'))) >= 3 or proc.poll() is not None, 300, 'frames written')
        assert proc.poll() is None, proc.stderr.read()
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143
    _one_line(err, 'extract')
    assert workers, 'no pool worker seen'
    wait_until(lambda: not any(_alive(pid) for pid in workers), 30, 'the pool workers to end')


def _children(pid: int) -> list[int]:
    path = Path(f'/proc/{pid}/task/{pid}/children')
    if not path.exists():
        pytest.skip('no /proc/<pid>/task/<pid>/children here')
    return [int(c) for c in path.read_text().split()]


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever inherited it, is not)."""
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return False


def test_train_terminated_keeps_last_pt_and_resumes(tmp_path):
    config = tiny_train_config(tmp_path, epochs=1000)
    run = tmp_path / 'runs' / 't'
    rc, err = _terminated(['train', config], lambda: (run / 'last.pt').is_file(), 'the first epoch saved')
    assert rc == 143, err
    assert '--resume' in _one_line(err, 'train')
    assert _debris(tmp_path) == [] and not (tmp_path / 'model.pt').exists()
    from vidseg_ros.training.checkpoints import read_training_state
    saved = read_training_state(run / 'last.pt')['epoch']
    again = _vidseg('train', config, '--resume', '--set', f'epochs={saved + 2}')
    assert again.returncode == 0, again.stderr
    assert f'resumed {run} at epoch {saved}' in again.stderr and (tmp_path / 'model.pt').is_file()


def test_propagate_terminated_keeps_its_labels_and_labels_the_rest_again(tmp_path):
    n = 300
    labels = [np.zeros((64, 64), np.uint8) if i in (0, n - 1) else None for i in range(n)]
    folder_dataset(tmp_path / 'ds', _noise(n, (64, 64)), labels)
    rc, err = _terminated(['propagate', tmp_path / 'ds', '--max-distance', str(n)],
                          lambda: len(list((tmp_path / 'ds' / 'labels').rglob('*.png'))) >= 5, 'labels written')
    assert rc == 143, err
    assert 'the labels written so far are kept' in _one_line(err, 'propagate')
    assert _debris(tmp_path / 'ds') == []
    labelled = sum(r.label is not None for r in read_index(tmp_path / 'ds'))
    assert labelled < n
    again = _vidseg('propagate', tmp_path / 'ds', '--max-distance', str(n))
    assert again.returncode == 0, again.stderr
    assert sum(r.label is not None for r in read_index(tmp_path / 'ds')) == n


def test_export_terminated_leaves_the_earlier_export_and_no_staged_file(tmp_path):
    """(Export handled SIGTERM on its own, silently: exit 143, no line.)"""
    pytest.importorskip('onnxruntime')
    model = ROOT / 'models' / 'camvid_keyframe_fpn.pt'     # big enough that the parity check follows the staging
    out = tmp_path / 'm.onnx'
    out.write_bytes(b'earlier')
    rc, err = _terminated(['export', model, out], lambda: any('.partial' in p.name for p in tmp_path.iterdir()),
                          'the graph staged')
    assert rc == 143, err
    _one_line(err, 'export')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx'] and out.read_bytes() == b'earlier'
    again = _vidseg('export', model, out)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']


def test_bag_from_frames_terminated_leaves_no_partial_bag_and_runs_again(tmp_path):
    (tmp_path / 'src').mkdir()
    for i, image in enumerate(_noise(800, (96, 128))):
        cv2.imwrite(str(tmp_path / 'src' / f'{i:04d}.png'), image)
    bag = tmp_path / 'out' / 'bag'
    rc, err = _terminated(['bag-from-frames', tmp_path / 'src', '--out', bag],
                          lambda: any(p.stat().st_size > 200_000 for p in bag.glob('*.mcap')), 'frames written')
    assert rc == 143, err
    assert 'the partial bag was removed; run the same command again' in _one_line(err, 'bag-from-frames')
    assert not (tmp_path / 'out').exists()      # the folders it made are removed, as after Ctrl-C
    again = _vidseg('bag-from-frames', tmp_path / 'src', '--out', bag)
    assert again.returncode == 0, again.stderr


def test_label_import_terminated_leaves_no_hidden_label_files(tmp_path):
    n = 400
    folder_dataset(tmp_path / 'ds', _noise(n, (64, 64)), [None] * n)
    (tmp_path / 'labels').mkdir()
    for i in range(n):
        cv2.imwrite(str(tmp_path / 'labels' / f'{i * 100_000_000}.png'), np.full((64, 64), i % 2, np.uint8))
    argv = ['label-import', tmp_path / 'ds', tmp_path / 'labels', '--class-names', 'bg,obj']
    rc, err = _terminated(argv, lambda: len(list((tmp_path / 'ds' / 'labels').rglob('*.png'))) >= 3, 'labels written')
    assert rc == 143, err
    _one_line(err, 'label-import')
    assert _debris(tmp_path / 'ds') == []
    again = _vidseg(*argv)
    assert again.returncode == 0, again.stderr


# ---- the rule: whose SIGTERM it is, and forked children ----------------------------------------------------------
def _in_command(monkeypatch, body):
    from vidseg_ros.tools import commands_data
    monkeypatch.setattr(commands_data, 'noise_sigma', lambda *a, **k: body())
    return CliRunner().invoke(app, ['noise-sigma', '.'])


def test_sigterm_is_taken_over_only_where_it_has_its_default_action(monkeypatch):
    """The command's SIGTERM handler comes only over the default action; a handler someone else installed (an
    application calling the CLI) stays theirs, and receives the signal."""
    during = []

    def body():
        during.append(signal.getsignal(signal.SIGTERM))
        if during[-1] is theirs:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)        # the handler runs between bytecodes
        return {'sigma': 1.0}

    seen = []

    def theirs(signum, frame):  # noqa: ARG001
        seen.append(signum)
    assert _in_command(monkeypatch, body).exit_code == 0
    previous = signal.signal(signal.SIGTERM, theirs)
    try:
        r = _in_command(monkeypatch, body)
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert r.exit_code == 0 and seen == [signal.SIGTERM]
    assert during[0] not in (signal.SIG_DFL, theirs) and during[1] is theirs
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_in_process_is_the_line_and_143_and_the_default_comes_back(monkeypatch):
    def body():
        # checked first: on code without the handler the kill below would end the test run itself
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'no SIGTERM handler during the command'
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    r = _in_command(monkeypatch, body)
    assert r.exit_code == 143, r.output
    assert r.stderr.strip() == 'vidseg noise-sigma: terminated (SIGTERM)'
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_forked_child_gets_sigterm_s_default_action(monkeypatch):
    """A forked pool worker that inherited the handler caught SIGTERM as an exception in its task and lived on:
    the pool's stop (terminate) did not end it."""
    import multiprocessing

    def child():
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            os._exit(3)     # a handler: in C code (OpenCV, torch) the child ended only once back in Python
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    def body():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'no SIGTERM handler during the command'
        p = multiprocessing.get_context('fork').Process(target=child)
        p.start()
        p.join(60)
        return {'sigma': p.exitcode}
    r = _in_command(monkeypatch, body)
    assert r.exit_code == 0, r.output
    assert '"sigma": -15' in r.stdout


def test_debug_shows_the_traceback_of_a_sigterm_and_still_exits_143(monkeypatch):
    from vidseg_ros.tools import commands_data

    def body(*args, **kwargs):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'no SIGTERM handler during the command'
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    monkeypatch.setattr(commands_data, 'noise_sigma', body)
    r = CliRunner().invoke(app, ['--debug', 'noise-sigma', '.'])
    assert r.exit_code == 143
    assert 'Traceback' in r.stderr and 'Terminated' in r.stderr


def test_sigterm_while_the_command_line_is_parsed_is_the_line_too(monkeypatch):
    """Before the command runs (typer turned it into a silent exit 130, as it did Ctrl-C)."""
    from typer.core import TyperGroup
    real = TyperGroup.parse_args

    def parse_args(self, ctx, args):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'no SIGTERM handler while parsing'
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        return real(self, ctx, args)
    monkeypatch.setattr(TyperGroup, 'parse_args', parse_args)
    r = CliRunner().invoke(app, ['noise-sigma', '.'])
    assert r.exit_code == 143
    assert r.stderr.strip() == 'vidseg noise-sigma: terminated (SIGTERM)'


# ---- a clean-up that fails because of the signal ---------------------------------------------------------------
def test_sigterm_right_after_a_frame_file_is_opened_is_still_143_and_leaves_no_bag(monkeypatch, tmp_path):
    """Found under load (1 of 50 SIGTERMs): the signal right after ``files.open_regular`` gave its descriptor to
    ``open()``. The file object closed it and the clean-up closed it again: the EBADF replaced the Terminated and
    bag-from-frames ended 'cannot read image file ...: Bad file descriptor', exit 2."""
    from vidseg_ros import files
    for i, image in enumerate(_noise(5)):
        cv2.imwrite(str(tmp_path / f'{i:04d}.png'), image)
    opened = []

    def open_then_terminated(*args, **kwargs):
        f = open(*args, **kwargs)
        opened.append(1)
        if len(opened) == 3:        # a few frames in: the bag is open
            from vidseg_ros.tools.cli_errors import Terminated
            f.close()               # as the unwinding drops the file object (it owns the descriptor)
            raise Terminated()      # where the handler runs: the bytecode after the call returned
        return f
    monkeypatch.setattr(files, 'open', open_then_terminated, raising=False)
    r = CliRunner().invoke(app, ['bag-from-frames', str(tmp_path), '--out', str(tmp_path / 'out' / 'bag')])
    assert len(opened) == 3
    assert r.exit_code == 143, r.stderr
    assert r.stderr.strip() == ('vidseg bag-from-frames: terminated (SIGTERM); the partial bag was removed; run the '
                                'same command again')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('signal_as, code, what', [('Terminated', 143, 'terminated (SIGTERM)'),
                                                    ('KeyboardInterrupt', 130, 'interrupted')])
def test_an_error_raised_while_the_interruption_is_handled_ends_as_the_interruption(monkeypatch, signal_as, code,
                                                                                    what):
    """A finally or except that fails (here with the EBADF of a double close) replaces the interruption; a
    user error's one line (exit 2) would tell a supervisor the input was wrong. ``from None`` hides the chain
    from tracebacks, not from this rule."""
    from vidseg_ros.tools import cli_errors
    interruption = {'Terminated': cli_errors.Terminated, 'KeyboardInterrupt': KeyboardInterrupt}[signal_as]

    def body():
        try:
            try:
                raise interruption()
            finally:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))     # closed twice
        except OSError as e:
            raise ValueError(f'cannot read image file x.png: {e.strerror}') from None
    r = _in_command(monkeypatch, body)
    assert r.exit_code == code, r.output
    assert r.stderr.strip() == f'vidseg noise-sigma: {what}'


# ---- a signal that lands in a finalizer -------------------------------------------------------------------------
class _DroppedWhileSignalled:
    """An object whose finalizer is where the signal's handler runs (the signal interrupts its sleep)."""

    def __init__(self, signum):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        time.sleep(5)


@pytest.mark.parametrize('signum, code, what', [(signal.SIGTERM, 143, 'terminated (SIGTERM)'),
                                                (signal.SIGINT, 130, 'interrupted')])
def test_a_signal_swallowed_by_a_finalizer_still_ends_the_command(monkeypatch, signum, code, what):
    """Seen under load: a SIGTERM whose handler ran inside a ``__del__`` was printed as "Exception ignored" and
    lost; the command ran to its end and exited 0. It is given back to the code the finalizer interrupted."""
    after = []

    def body():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, 'no SIGTERM handler during the command'
        _DroppedWhileSignalled(signum)      # dropped at once: its __del__ runs here
        for _ in range(3):
            after.append(1)
            time.sleep(0.2)
        return {'sigma': 1.0}
    hook_before = sys.unraisablehook
    r = _in_command(monkeypatch, body)
    assert r.exit_code == code, r.output
    assert r.stderr.strip() == f'vidseg noise-sigma: {what}'
    assert len(after) <= 1, 'the command ran on after the signal'
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and sys.unraisablehook is hook_before


def test_a_signal_no_handler_takes_again_still_ends_the_command_as_interrupted(monkeypatch):
    """The safety net: the given-back signal meets no handler of Python's (someone set SIGINT to be ignored
    after the finalizer): the command still ends as interrupted, not 0."""
    def body():
        _DroppedWhileSignalled(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return {'sigma': 1.0}
    previous = signal.getsignal(signal.SIGINT)
    try:
        r = _in_command(monkeypatch, body)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert r.exit_code == 130, r.output
    assert r.stderr.strip() == 'vidseg noise-sigma: interrupted'


def test_other_unraisable_errors_are_still_printed(monkeypatch):
    class Faulty:
        def __del__(self):
            raise ValueError('from a finalizer')
    seen = []
    monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(u.exc_value))

    def body():
        Faulty()
        return {'sigma': 1.0}
    r = _in_command(monkeypatch, body)
    assert r.exit_code == 0, r.output
    assert [str(e) for e in seen] == ['from a finalizer']
