"""The `vidseg` error contract, in one place: a user error (bad value, missing or unreadable file, wrong
kind of file or data, a package the command needs that is not installed) ends as one line on stderr and
exit code 2; anything else is a bug: one line and exit code 1. ``vidseg --debug ...`` (or
``VIDSEG_DEBUG=1``) shows the traceback instead. Ctrl-C (SIGINT) ends a command in one line saying what is kept
and how to go on, exit code 130; SIGTERM (``kill``, ``timeout``, systemd, ``docker stop``, a cancelled CI job)
takes the same way out, its cleanup included, with exit code 143.
"""
from __future__ import annotations

import _thread
import os
import pickle
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path

import typer
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from vidseg_ros.extras import extra_of
from vidseg_ros.text import one_line as cut_to_one_line

REDELIVER_AFTER_S = 0.01   # a Ctrl-C or SIGTERM swallowed by a finalizer comes back after this
MAX_MESSAGE = 400          # characters of an error message shown (file contents can end up in them)
_STATE = {'debug': False, 'pid': 0}
# What an interrupted command leaves and how to go on, where that is known to hold; the others say only
# that they were interrupted.
_AFTER_INTERRUPT = {
    'extract': 'the frames written so far are kept; run the same command again to finish the '
               'dataset (it resumes)',
    'propagate': 'the labels written so far are kept; run the same command again to label the rest',
    'train': 'what the run saved (last.pt, after each epoch) is kept; run the same command with --resume to '
             'continue from there',
    'bag-recover': 'the partial copy was removed and the bag is unchanged; run the same command again',
    'bag-from-frames': 'the partial bag was removed; run the same command again',
}

# import name -> the name pip installs it under, where the two differ (requirements.txt pins each one;
# `make install` installs them all)
_PIP_NAMES = {'cv2': 'opencv-python-headless', 'yaml': 'pyyaml', 'mcap_ros2': 'mcap-ros2-support',
              'dask': 'dask[distributed]', 'distributed': 'dask[distributed]', 'backports.zstd': 'backports.zstd',
              'PIL': 'pillow'}


class _Interrupted(Exception):
    """A KeyboardInterrupt (Ctrl-C, SIGINT) inside a command, carried past typer, which turns it into a
    silent exit 130 before ``main`` could say anything."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt so that it takes the same way out: the commands'
    finally blocks and context managers (staged files, partial bags, pool workers) and the one line. With the
    default action every command but export died at once: a partial bag or recovered copy, hidden temporary
    files, an unindexed extract, a half eval folder left behind, and not a word."""


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises ``Terminated`` in the main thread while a command runs. Only where SIGTERM has its
    default action and this is the main thread: a handler someone else installed is theirs. A Ctrl-C or SIGTERM
    that a finalizer swallows is delivered again (``_redeliver_swallowed``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STATE['pid'] = os.getpid()
    take_sigterm = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if take_sigterm:
        signal.signal(signal.SIGTERM, _raise_terminated)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _redeliver_swallowed(sys.unraisablehook)
    try:
        yield
    finally:
        if (timer := _STATE.pop('redelivery', None)) is not None:
            timer.cancel()      # the command has ended: the signal must not reach what runs after it
        sys.unraisablehook = previous_hook
        if take_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _redeliver_swallowed(previous):
    """An unraisable-exception hook that gives back a Ctrl-C or SIGTERM whose handler ran inside a finalizer
    (``__del__``, a weakref callback, a generator closed by the collector). Python prints those as "Exception
    ignored" and runs on: a SIGTERM landing in one was lost and the command ended 0 (seen under load). The
    signal is raised again in the main thread, in the code the finalizer interrupted, so the command's own
    clean-ups run; ``_STATE['swallowed']`` ends the command as interrupted should no handler take it."""
    def hook(unraisable):
        e = unraisable.exc_value
        if not isinstance(e, KeyboardInterrupt) or threading.current_thread() is not threading.main_thread():
            previous(unraisable)
            return
        _STATE['swallowed'] = e
        # From another thread, a moment later: from here (interrupt_main or raise_signal) the handler ran at
        # once, inside this hook, and the exception was lost again. Swallowed again, it comes back again.
        timer = threading.Timer(REDELIVER_AFTER_S, _thread.interrupt_main,
                                args=(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT,))
        timer.daemon = True
        _STATE['redelivery'] = timer
        timer.start()
    return hook


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    if os.getpid() != _STATE['pid']:     # a forked child the reset below did not reach
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated()


def _default_in_child() -> None:
    """A forked child (a pool worker, a DataLoader worker) gets SIGTERM's default action back: the handler
    would raise in the child's own code, where the pool's worker loop catches it and lives on, and the pool's
    stop (``executors._stop_workers``: terminate) no longer ended it."""
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:      # forked from another thread: the pid check in the handler does it
            pass


os.register_at_fork(after_in_child=_default_in_child)


def _user_error(e: BaseException) -> bool:
    """Errors caused by the input (values, files, data), as opposed to bugs in this package."""
    if isinstance(e, (ValueError, OSError, EOFError, pickle.UnpicklingError)):
        return True
    if isinstance(e, RuntimeError) and str(e).startswith('Symlink loop from'):
        return True     # Path.resolve() of a link loop a user gave (Python < 3.13), not a bug of ours
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {'CheckpointError', 'YAMLError'}) or type(e).__module__.startswith(('rosbags', 'mcap'))


def missing_package(e: BaseException) -> str | None:
    """The pip name of the package a failed import wanted (``cv2`` -> ``opencv-python-headless``), or None
    when the import that failed is this package's own (a bug). A package that fails while importing itself
    (a broken install) has no ``name``: the module whose code raised the error is that package."""
    if not isinstance(e, ImportError):
        return None
    name = e.name
    if not name:
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        name = tb.tb_frame.f_globals.get('__name__') if tb is not None else None
    if not name or name.split('.')[0] in ('vidseg_ros', '__main__'):
        return None
    return _PIP_NAMES.get(name) or _PIP_NAMES.get(name.split('.')[0]) or name.split('.')[0]


def needs_package(command: str, package: str) -> str:
    """The one line for a missing package, in the words of ``--executor dask``'s own check."""
    spec = f'"{package}"' if '[' in package else package      # brackets are a glob to the shell
    # "(or make install)" alone meant nothing to a user of the wheel: name the extra that brings the package
    extra = extra_of(package)
    also = f'or pip install "vidseg_ros[{extra}]"; ' if extra else ''
    return f'{command or "vidseg"} needs the {package} package: pip install {spec} ({also}in a source checkout: make install)'


def one_line(text: object) -> str:
    """A message as one line of at most MAX_MESSAGE characters, its middle cut when longer (``text.one_line``)."""
    return cut_to_one_line(text, MAX_MESSAGE)


def _file_in_the_way(e: OSError) -> Path | None:
    """The file standing where a folder must be: ``--out afile`` (made with mkdir: FileExistsError) or
    ``afile/x.onnx`` (NotADirectoryError, or FileExistsError from mkdir(parents=True)); else None."""
    if not isinstance(e.filename, (str, os.PathLike)) or e.filename2 is not None:
        return None
    if isinstance(e, FileExistsError):
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is None or tb.tb_frame.f_code.co_name not in ('mkdir', 'makedirs'):
            return None      # a file created exclusively (O_EXCL) that exists: not about folders
    elif not isinstance(e, NotADirectoryError):
        return None
    path = Path(e.filename)
    for p in [*reversed(path.parents), path]:       # from the top: the first one that is no folder
        if os.path.lexists(p) and not p.is_dir():   # a link to nothing too: mkdir said "File exists"
            return p
    return None


def _not_a_folder(path: Path) -> str:
    """'X is a file, not a folder', or what else X is (a FIFO was called a file, a link to nothing "File exists")."""
    from vidseg_ros.files import file_problem
    try:
        problem = file_problem(path)
    except OSError:
        problem = ''
    return f'{path} {problem or "is a file"}, not a folder'


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and (in_the_way := _file_in_the_way(e)) is not None:
        return _not_a_folder(in_the_way)
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f'{e.filename}: {e.strerror}'
    text = str(e)
    return text if text and not isinstance(e, EOFError) else f'{type(e).__name__}: {text}'.rstrip(': ')


class ContractGroup(TyperGroup):
    """Typer's group with the error contract in ``main`` (the console script and CliRunner both call it)."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):  # noqa: ARG002 - always vidseg
        _STATE['debug'] = os.environ.get('VIDSEG_DEBUG', '') not in ('', '0')
        args = list(sys.argv[1:] if args is None else args)
        end = args.index('--') if '--' in args else len(args)
        if '--debug' in args[:end]:          # accepted anywhere, not only before the command
            args.remove('--debug')
            _STATE['debug'] = True
        if not _STATE['debug']:
            quiet_libraries()
        command = next((a for a in args if not a.startswith('-')), '')
        where = f'vidseg {command}'.strip()
        _STATE['swallowed'] = None
        eof = None
        try:
            with _terminate_as_interrupt():
                rv = super().main(args, 'vidseg', standalone_mode=False, **extra)
        except _Interrupted as e:
            rv = _interrupted(where, command, e.__cause__)
        except _EndOfInput as e:
            eof = e.__cause__       # handled below, outside this clause: --debug's traceback is the EOFError's alone
        except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
            rv = _failed(where, command, e)
        if eof is not None:
            rv = _failed(where, command, eof)
        if _STATE['swallowed'] is not None:     # swallowed, and given again to no handler: still an interruption
            rv = _interrupted(where, command, _STATE['swallowed'])
        rv = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return rv
        sys.exit(rv)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as e:      # while parsing: typer's silent exit 130 too
            raise _Interrupted() from e
        except EOFError as e:
            raise _EndOfInput() from e

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise _Interrupted() from e
        except EOFError as e:
            raise _EndOfInput() from e


class _EndOfInput(Exception):
    """A command's EOFError (a library reading a cut stream), carried past typer, which printed an empty line to
    stderr for it (closing a prompt's ^D echo) before our one line, and made it an Abort (exit 130 'aborted', and
    no traceback with --debug). ``main`` handles the EOFError itself (``__cause__``)."""


def _failed(where: str, command: str, e: Exception) -> int:
    behind = _interruption_behind(e)
    return _error_code(where, command, e) if behind is None else _interrupted(where, command, behind, e)


def _error_code(where: str, command: str, e: Exception) -> int:
    """An error that ended a command -> its one line and exit code (2: the input's fault, 1: a bug); ``--debug``
    raises it."""
    if isinstance(e, click_errors.NoArgsIsHelpError):
        typer.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        return 2
    if isinstance(e, click_errors.UsageError):
        where = e.ctx.command_path if e.ctx else where
        return _fail(where, f'{e.format_message()} (see {where} --help)', 2)
    if isinstance(e, click_errors.ClickException):
        return _fail(where, e.format_message(), 2)
    if isinstance(e, typer.Abort):      # a command's own (a command's EOFError comes as itself: _EndOfInput)
        return _fail(where, 'aborted', 130)
    if _STATE['debug']:
        raise e
    if (package := missing_package(e)) is not None:
        return _fail(where, needs_package(command, package), 2)
    if _user_error(e):
        return _fail(where, _describe(e), 2)
    return _fail(where, f'internal error, please report it: {type(e).__name__}: {e} '
                        '(vidseg --debug ... shows the traceback)', 1)


def _interruption_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (``Terminated``) that error ``e`` was raised while handling, if any: a clean-up that
    failed because the signal came at a bad moment. SIGTERM right after ``files.open_regular`` handed its file
    descriptor to ``open()`` closed it twice: the second close's EBADF replaced the Terminated, and
    bag-from-frames ended 'cannot read image file ...: Bad file descriptor', exit 2 instead of 143 (a run under
    load, 1 of 50 SIGTERMs). The command was interrupted: it says so, with the interruption's exit code."""
    seen = set()
    e = e.__context__       # kept by ``raise ... from None`` too (only hidden from tracebacks)
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__context__
    return None


def _interrupted(where: str, command: str, e: KeyboardInterrupt, raised: BaseException | None = None) -> int:
    """Ctrl-C: one line (what is kept and how to go on, where known) and exit code 130, as a shell gives;
    SIGTERM the same line saying so, and 143. ``raised``: the error a failed clean-up raised in its place.
    ``--debug``: the traceback instead of the line (Ctrl-C raised as it came, or that error)."""
    _STATE['swallowed'] = None      # said now, once
    terminated = isinstance(e, Terminated)
    if _STATE['debug']:
        if not terminated:
            raise (raised or e) from None
        traceback.print_exception(raised or e, file=sys.stderr)     # raised, Python would end it as a SIGINT
    else:
        hint = _AFTER_INTERRUPT.get(command)
        what = 'terminated (SIGTERM)' if terminated else 'interrupted'
        typer.echo(one_line(f'{where}: {what}' + (f'; {hint}' if hint else '')), err=True)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def _fail(where: str, message: str, code: int) -> int:
    typer.echo(f'{where}: error: {one_line(message)}', err=True)
    return code


def quiet_libraries() -> None:
    """Keep libraries' own warnings off the command's stderr, where the contract allows one error line:
    OpenCV logged ``[ WARN:0@...] findDecoder imread_(...)`` before the error that says the same. Its level
    is read when cv2 is imported (here, by a command, or in a pool worker, which inherits the environment);
    ``OPENCV_LOG_LEVEL`` set by the user wins, and ``--debug`` keeps OpenCV's default."""
    os.environ.setdefault('OPENCV_LOG_LEVEL', 'ERROR')
    cv2 = sys.modules.get('cv2')
    if cv2 is not None and os.environ['OPENCV_LOG_LEVEL'] == 'ERROR':   # imported before the CLI started
        logging = getattr(getattr(cv2, 'utils', None), 'logging', None)
        if logging is not None:
            logging.setLogLevel(logging.LOG_LEVEL_ERROR)
