"""An error nobody foresaw (a bug) while the recorder closes its bag. ``_finish`` caught only the RuntimeError that
BagSink.close raises for the failures it knows: on a stop, anything else read 'writing BAG failed: ...; bag closed
properly (1 file(s), summary and metadata.yaml written)' with no metadata.yaml there; after a write error, it killed
the writer thread in silence (on_error never called, the node recording on to nothing). Now it is said - the
traceback logged, on_error told that the bag is NOT closed properly and how to recover it - and the bag recovers."""
import errno
import logging
import time

import pytest
from support.bags import IMAGE, image_cdr

from vidseg_ros.data.bags import writer as writer_module
from vidseg_ros.data.bags.reader import read_messages
from vidseg_ros.data.bags.recover import recover_bag
from vidseg_ros.data.recorder.core import Recorder


class Injected(Exception):
    """What no handler expects."""


def _recorder(path, errors, n=10):
    r = Recorder(path, min_free_disk_bytes=0, chunk_size_bytes=3000, on_error=errors.append)
    r.add_topic('/cam', IMAGE)
    for i in range(n):
        r.put('/cam', image_cdr(i), 10**9 + i)
    deadline = time.monotonic() + 30
    while r.queued_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    return r


def _close_fails_unexpectedly(monkeypatch):
    """Closing the file fails (EIO), and what then closes it at its last complete chunk raises what nobody expects."""
    def split(self):
        raise OSError(errno.EIO, 'Input/output error')

    def adopt_sealed(self, path):
        raise Injected('the sealed summary could not be read')
    monkeypatch.setattr(writer_module.BagWriter, 'split', split)
    monkeypatch.setattr(writer_module.BagWriter, 'adopt_sealed', adopt_sealed)


def _recovered(bag, tmp_path):
    report = recover_bag(bag, out=tmp_path / 'recovered', force=True)
    return [m.log_time_ns for m in read_messages(report.out or bag)]


def test_an_unexpected_error_closing_on_stop_is_said_and_the_bag_recovers(tmp_path, monkeypatch, caplog):
    errors = []
    r = _recorder(tmp_path / 'bag', errors)
    _close_fails_unexpectedly(monkeypatch)
    with caplog.at_level(logging.ERROR, logger='vidseg_ros.data.recorder.core'):
        assert r.stop(30)
    monkeypatch.undo()
    assert r.state == 'error' and not r.closed_ok
    assert errors == [r.error]
    assert r.error.startswith(f'closing {tmp_path / "bag"} failed unexpectedly (Injected: the sealed summary could '
                              'not be read); the bag is NOT closed properly'), r.error
    assert 'closed properly (' not in r.error and f'vidseg bag-recover {tmp_path / "bag"}' in r.error
    assert any(rec.exc_info and rec.exc_info[0] is Injected for rec in caplog.records)   # the traceback
    assert _recovered(tmp_path / 'bag', tmp_path)[:8] == [10**9 + i for i in range(8)]


def test_an_unexpected_error_closing_after_a_write_error_is_said(tmp_path, monkeypatch):
    errors = []
    r = _recorder(tmp_path / 'bag', errors)
    real_write = writer_module.BagWriter.write

    def write(self, *args, **kwargs):
        if args[2] >= 10**9 + 10:
            raise OSError(errno.EIO, 'Input/output error')
        return real_write(self, *args, **kwargs)
    monkeypatch.setattr(writer_module.BagWriter, 'write', write)
    _close_fails_unexpectedly(monkeypatch)
    for i in range(10, 15):
        r.put('/cam', image_cdr(i), 10**9 + i)
    r._thread.join(30)
    monkeypatch.undo()
    assert not r._thread.is_alive() and r.state == 'error' and not r.closed_ok
    assert errors == [r.error], errors      # said once, through on_error (the node stops on it)
    assert r.error.startswith(f'writing {tmp_path / "bag"} failed: [Errno 5] Input/output error')
    assert 'failed unexpectedly (Injected' in r.error and 'NOT closed properly' in r.error
    assert r.snapshot()['/cam'].dropped == 5
    assert r.stop(5)
    assert _recovered(tmp_path / 'bag', tmp_path)[:8] == [10**9 + i for i in range(8)]


def test_a_bug_anywhere_in_the_writer_thread_is_said(tmp_path, monkeypatch):
    errors = []
    r = _recorder(tmp_path / 'bag', errors, n=1)

    def pop(self, item):
        raise Injected('a bug')
    monkeypatch.setattr(Recorder, '_pop', pop)
    r.put('/cam', image_cdr(1), 10**9 + 1)
    r._thread.join(30)
    assert not r._thread.is_alive()
    assert errors == ['the bag writer failed unexpectedly (Injected: a bug)'] and r.state == 'error'
    assert not r.put('/cam', image_cdr(2), 10**9 + 2)     # counted dropped, not queued to no one
    assert r.snapshot()['/cam'].dropped == 1


@pytest.fixture(autouse=True)
def _no_thread_excepthook_noise(monkeypatch):
    """A writer thread that dies raises through threading.excepthook: fail the test instead of printing."""
    import threading
    died = []
    monkeypatch.setattr(threading, 'excepthook', died.append)
    yield
    assert not died, died
