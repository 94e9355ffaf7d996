"""Flow spans spilling at once reserve their disk space against each other.

A span between two labels checked, before its flows, that its spill fits in the free space, each span alone: with
several workers (the local pool, Dask) spilling at once, spans that each fit alone passed together and could fill the
disk after their flows were computed, what the check exists to prevent. Now each span reserves its spill (a file in
its spill folder, under a lock file in the spill folder) and the next one counts the free space less what the
running spills have reserved and not written yet: of two spans that fit alone but not together, the second is
refused before its first flow (threads of one process, and two processes).
"""
import collections
import errno
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from vidseg_ros.data.labelling import propagate, spill
from vidseg_ros.data.labelling.propagate import PropagateConfig, iter_propagate_flow
from vidseg_ros.data.labelling.spill import Spill, span_spill_bytes

H, W, N = 24, 32, 40
Usage = collections.namedtuple('Usage', 'total used free')
FRAMES_CODE = f"""
import numpy as np
frames = [np.roll(np.tile(np.arange({W}, dtype=np.uint8) * 8, ({H}, 1)), i, 1)[..., None].repeat(3, 2)
          for i in range({N})]
label = np.zeros(({H}, {W}), np.uint8)
label[:, 10:] = 1
labels = {{0: label, {N} - 1: label}}
"""
NEED = span_spill_bytes(N - 2, (H, W), True)       # the one span between the two labels, budget 0: all on disk


def _clip():
    scope: dict = {}
    exec(FRAMES_CODE, scope)
    return scope['frames'], scope['labels']


@pytest.fixture
def no_budget(monkeypatch):
    monkeypatch.setattr(spill, 'SPILL_BUDGET', 0)


def _free(monkeypatch, free: int):
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: Usage(10**12, 0, free))


def _counting_flows(monkeypatch, on_flow=None) -> collections.Counter:
    """Flows computed, by thread name; ``on_flow(thread name)`` before each."""
    flows: collections.Counter = collections.Counter()
    real = propagate.FlowEstimator.__call__

    def counted(self, *args):
        name = threading.current_thread().name
        flows[name] += 1
        if on_flow:
            on_flow(name)
        return real(self, *args)
    monkeypatch.setattr(propagate.FlowEstimator, '__call__', counted)
    return flows


def test_two_spans_at_once_that_fit_only_alone_one_is_refused_before_its_flows(tmp_path, monkeypatch, no_budget):
    """Threads A and B each propagate a span needing NEED with 1.5 NEED free; B starts while A computes its flows.
    Old code: both ran (2 NEED spilled where 1.5 NEED were free). Now B is refused before its first flow, naming
    the span, what it needs, what is free and what A has reserved; A runs to the end."""
    _free(monkeypatch, NEED * 3 // 2)
    a_started, b_done = threading.Event(), threading.Event()

    def hold_a(name):
        if name == 'A' and not a_started.is_set():
            a_started.set()
            b_done.wait(60)         # a guard against a hang, not a timing: B sets it when it has run
    flows = _counting_flows(monkeypatch, hold_a)
    out: dict = {}

    def run(name):
        if name == 'B':
            a_started.wait(60)
        frames, labels = _clip()
        try:
            out[name] = len(list(iter_propagate_flow(frames, labels, 2, spill_dir=tmp_path)))
        except OSError as e:
            out[name] = e
        finally:
            if name == 'B':
                b_done.set()
    threads = [threading.Thread(target=run, args=(k,), name=k) for k in 'AB']
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out['A'] == N - 2
    assert isinstance(out['B'], OSError) and out['B'].errno == errno.ENOSPC, out
    assert flows['B'] == 0
    gb = f'{NEED / 1e9:.1f}'
    assert (f'the {N - 2} frames between the labelled frames positions 0 and {N - 1} needs {gb} GB of temporary '
            f'space here, {NEED * 3 // 2 / 1e9:.1f} GB are free and {gb} GB of them reserved by other spans') \
        in str(out['B'])
    assert '\n' not in str(out['B'])
    # A's reservation went with its spill: the span fits now
    assert len(list(iter_propagate_flow(*_clip(), 2, spill_dir=tmp_path))) == N - 2
    assert not list(tmp_path.glob(spill.PREFIX + '*'))


_CHILD = FRAMES_CODE + """
import collections, shutil, sys
from vidseg_ros.data.labelling import propagate, spill
spill.SPILL_BUDGET = 0
shutil.disk_usage = lambda path: collections.namedtuple('U', 'total used free')(10**12, 0, int(sys.argv[2]))
real, first = propagate.FlowEstimator.__call__, [True]
def held(self, *args):
    if first:
        first.clear()
        print('spilling', flush=True)
        sys.stdin.readline()
    return real(self, *args)
propagate.FlowEstimator.__call__ = held
print(len(list(propagate.iter_propagate_flow(frames, labels, 2, spill_dir=sys.argv[1]))), flush=True)
"""


def test_a_span_in_another_process_counts(tmp_path, monkeypatch, no_budget):
    """A worker process computing the flows of its span (NEED reserved) and this one's span of NEED with 1.5 NEED
    free: refused here before its first flow (old code: ran); after the other process ends, it runs."""
    _free(monkeypatch, NEED * 3 // 2)
    flows = _counting_flows(monkeypatch)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, '-c', _CHILD, str(tmp_path), str(NEED * 3 // 2)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == 'spilling'
        with pytest.raises(OSError) as e:
            list(iter_propagate_flow(*_clip(), 2, spill_dir=tmp_path))
        assert e.value.errno == errno.ENOSPC and 'reserved by other spans' in str(e.value)
        assert not flows
    finally:
        child.stdin.write('\n')
        child.stdin.close()
        assert child.stdout.readline().strip() == str(N - 2)
        assert child.wait(120) == 0
    assert len(list(iter_propagate_flow(*_clip(), 2, spill_dir=tmp_path))) == N - 2


def _usage_of(folder, free_before: int):
    """``shutil.disk_usage`` of a disk with ``free_before`` free before the spills in ``folder`` wrote their files."""
    def usage(path):
        written = sum(f.stat().st_size for f in folder.rglob('*.npy'))
        return Usage(10**12, 0, free_before - written)
    return usage


def test_what_a_spill_has_written_is_not_counted_twice(tmp_path, monkeypatch):
    """The free space already lacks what a running spill wrote: only its reservation's unwritten part is held back.
    A reserves 1000 of 1500 free and writes 1000 (500 free): a spill of 400 fits, one of 600 does not."""
    monkeypatch.setattr(shutil, 'disk_usage', _usage_of(tmp_path, 1500))
    with Spill(tmp_path, budget_bytes=0, need_bytes=1000) as a:
        a.put(('x',), np.zeros(1000 - 128, np.uint8))     # an .npy file of 1000 bytes (its header 128)
        with Spill(tmp_path, budget_bytes=0, need_bytes=400):
            pass
        with pytest.raises(OSError) as e, Spill(tmp_path, budget_bytes=0, need_bytes=600, what='span X'):
            pass
        assert str(e.value).startswith('[Errno 28] span X needs 0.0 GB')
    with Spill(tmp_path, budget_bytes=0, need_bytes=1400):     # A ended: its reservation too
        pass


def test_a_spill_within_its_budget_reserves_nothing(tmp_path, monkeypatch):
    _free(monkeypatch, 0)
    with Spill(tmp_path, budget_bytes=100, need_bytes=100) as s:
        s.put(('x',), np.zeros(100, np.uint8))
    assert not list(tmp_path.iterdir())


def test_a_reservation_of_a_process_that_is_gone_does_not_count(tmp_path, monkeypatch):
    """A worker killed mid-span leaves its spill folder (the next run removes it): its reservation holds nothing."""
    _free(monkeypatch, 1000)
    gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    import socket
    dead = tmp_path / (spill.PREFIX + 'dead')
    dead.mkdir()
    (dead / spill.RESERVED_NAME).write_text(f'1000 {gone.stdout.strip()} {socket.gethostname()}\n')
    live = tmp_path / (spill.PREFIX + 'live')
    live.mkdir()
    (live / spill.RESERVED_NAME).write_text(f'300 {os.getpid()} {socket.gethostname()}\n')
    with Spill(tmp_path, budget_bytes=0, need_bytes=700):
        pass
    with pytest.raises(OSError), Spill(tmp_path, budget_bytes=0, need_bytes=701):
        pass


@pytest.mark.parametrize('consistency', [True, False])
def test_span_spill_bytes_is_what_a_span_puts(monkeypatch, no_budget, consistency):
    """The one definition of a span's spill (``spill.span_spill_bytes``, which the check reserves) equals the
    bytes its backward pass puts in the spill: states, and with the consistency check both flows of each pair."""
    put = []
    real_put = Spill.put
    monkeypatch.setattr(Spill, 'put', lambda self, key, *arrays: put.append(sum(a.nbytes for a in arrays))
                        or real_put(self, key, *arrays))
    _free(monkeypatch, 10**12)
    frames, labels = _clip()
    list(iter_propagate_flow(frames, labels, 2, PropagateConfig(consistency=consistency)))
    assert sum(put) == span_spill_bytes(N - 2, (H, W), consistency)


_HOLDER = """
import fcntl, sys, time
lock = open(sys.argv[1], 'a')
fcntl.flock(lock, fcntl.LOCK_EX)
print('held', flush=True)
time.sleep(120)
"""


def test_a_spill_waits_for_the_lock_and_goes_on_when_its_holder_is_killed(tmp_path, monkeypatch):
    """A worker killed (OOM, SIGKILL) while it held the spill lock leaves the lock file, not the lock: the spill
    waiting for it goes on, and so do the spills after it."""
    _free(monkeypatch, 1000)
    holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(tmp_path / spill.LOCK_NAME)],
                              stdout=subprocess.PIPE, text=True)
    box: dict = {}

    def reserve():
        with Spill(tmp_path, budget_bytes=0, need_bytes=600) as s:
            box['reserved'] = (Path(s._tmp.name) / spill.RESERVED_NAME).read_text().split()[0]
    waiter = threading.Thread(target=reserve)
    try:
        assert holder.stdout.readline().strip() == 'held'
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not box       # waits while the lock is held
    finally:
        holder.kill()
        holder.wait()
    waiter.join(60)
    assert box == {'reserved': '600'} and (tmp_path / spill.LOCK_NAME).exists()
    with Spill(tmp_path, budget_bytes=0, need_bytes=1000):      # the lock file left behind blocks nothing
        pass


def test_spill_folders_without_a_readable_reservation_count_nothing(tmp_path, monkeypatch):
    """A killed run's spill folders: one that spilled past its budget with no reservation (need unknown), one whose
    reservation file is empty (killed as it wrote it). Their files are on the disk already (the free space lacks
    them): they reserve nothing more, so a spill of all the free space fits."""
    _free(monkeypatch, 1000)
    for name, reserved in (('a', None), ('b', '')):
        folder = tmp_path / (spill.PREFIX + name)
        folder.mkdir()
        np.save(folder / 'x_0.npy', np.zeros(10))
        if reserved is not None:
            (folder / spill.RESERVED_NAME).write_text(reserved)
    with Spill(tmp_path, budget_bytes=0, need_bytes=1000):
        pass
    with pytest.raises(OSError), Spill(tmp_path, budget_bytes=0, need_bytes=1001):
        pass
