"""The data loop on Dask (a local cluster of worker processes): the same files and index, byte for byte,
as the local run; complete and identical after a worker is killed mid-run or the driver dies."""
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('distributed')

from vidseg_ros.data.executors import ExecutorError, task_executor  # noqa: E402
from vidseg_ros.data.datasets.extract import ExtractConfig, extract  # noqa: E402
from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag  # noqa: E402
from vidseg_ros.data.datasets.labels import write_label  # noqa: E402
from vidseg_ros.data.labelling.propagate import PropagateConfig  # noqa: E402
from vidseg_ros.data.labelling.run import propagate_dataset  # noqa: E402
from vidseg_ros.data.datasets.layouts import extracted_source, read_index, write_index, write_meta  # noqa: E402
from vidseg_ros.data.datasets.variants import make_variant, write_variant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _clip(n: int, seed: int, hw=(96, 128)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A textured scene with a bright square moving 2 px per frame, and its ground-truth masks."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 160, (*hw, 3), dtype=np.uint8)
    frames, masks = [], []
    for t in range(n):
        img, mask = bg.copy(), np.zeros(hw, np.uint8)
        y, x = 20 + seed * 3, 10 + 2 * t
        img[y:y + 30, x:x + 30] = (250, 220, 40)
        mask[y:y + 30, x:x + 30] = 1
        frames.append(img)
        masks.append(mask)
    return frames, masks


def _bags(root: Path, count: int, frames: int) -> list[Path]:
    bags = []
    for b in range(count):
        path = root / f'drive_{b}'
        write_bag(path, [_clip(frames, b)[0]], BagFromFramesConfig(rate_hz=10, camera_info=False))
        bags.append(path)
    return bags


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name != 'dataset.yaml'}


def _label_every(root: Path, k: int) -> None:
    """Human labels on every k-th frame (ground truth of the synthetic clips)."""
    write_meta(root, {'classes': ['background', 'square'], 'ignore_index': 255, 'fps': 10.0})
    recs = read_index(root)
    for seq in sorted({r.sequence for r in recs}):
        bag_no = int(seq.split('_')[1])
        masks = _clip(len([r for r in recs if r.sequence == seq]), bag_no)[1]
        for r in [r for r in recs if r.sequence == seq]:
            if r.index % k == 0:
                lab = write_label(root / 'labels' / seq / f'{r.stamp_ns}.png', masks[r.index])
                recs[recs.index(r)] = replace(r, label=lab, label_source='human')
    write_index(root, recs)


def test_extract_and_propagate_on_dask_equal_the_local_run(tmp_path):
    bags = _bags(tmp_path, 3, 12)
    local, dask = tmp_path / 'local', tmp_path / 'dask'
    extract(bags, local, ExtractConfig())
    result = extract(bags, dask, ExtractConfig(workers=2), executor='dask')
    assert result.written == 36 and result.failed == 0
    assert _tree(local) == _tree(dask)          # index.csv and every image, byte for byte
    for root in (local, dask):
        _label_every(root, 5)
    cfg = PropagateConfig(method='flow')
    counts_local = propagate_dataset(local, cfg)
    counts_dask = propagate_dataset(dask, cfg, workers=2, executor='dask')
    assert counts_local == counts_dask and counts_local.get('propagated', 0) > 0
    assert _tree(local) == _tree(dask)          # labels and index too
    # the noise-copies variant (one task per frame) from the same source
    src = extracted_source(local)
    for where, kw in (('v_local', {}), ('v_dask', {'executor': 'dask', 'workers': 2})):
        write_variant(make_variant(src, 'noise', n=1, copies=3, out=tmp_path / where, **kw), tmp_path / where)
    assert _tree(tmp_path / 'v_local') == _tree(tmp_path / 'v_dask')
    assert len(read_index(tmp_path / 'v_local')) == 3 * 3   # 3 sequences, 1 frame each, 3 copies


def _worker_pids() -> list[int]:
    import psutil
    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any('spawn_main' in a or 'forkserver' in a for a in p.cmdline()) and p.children() == []:
                pids.append(p.pid)
        except psutil.Error:    # a child that ended (a zombie, gone) while we looked: not a worker to kill
            pass
    return pids


def test_a_worker_killed_mid_run_loses_nothing(tmp_path):
    psutil = pytest.importorskip('psutil')
    bags = _bags(tmp_path, 4, 60)
    extract(bags, tmp_path / 'local', ExtractConfig())
    out, box = tmp_path / 'dask', {}
    thread = threading.Thread(target=lambda: box.update(r=extract(bags, out, ExtractConfig(workers=2),
                                                                  executor='dask')))
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        if len(list((out / 'images').rglob('*.png'))) >= 10:
            pids = _worker_pids()
            if pids:
                killed = pids[0]
                psutil.Process(killed).kill()
                break
        time.sleep(0.02)
    thread.join(timeout=180)
    assert killed is not None, 'no Dask worker process found to kill (run finished too early?)'
    assert box['r'].frames == 240
    assert _tree(tmp_path / 'local') == _tree(out)


def test_driver_killed_then_rerun_gives_the_same_dataset(tmp_path):
    bags = _bags(tmp_path, 2, 80)
    extract(bags, tmp_path / 'local', ExtractConfig())
    out = tmp_path / 'dask'
    cmd = [sys.executable, '-m', 'vidseg_ros.cli', 'extract', *map(str, bags), '--out', str(out),
           '--executor', 'dask', '--workers', '2']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((out / 'images').rglob('*.png'))) >= 20:
            break
        time.sleep(0.02)
    import os
    os.killpg(proc.pid, signal.SIGKILL)       # the driver and its whole local cluster, no clean-up
    proc.wait()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    assert _tree(tmp_path / 'local') == _tree(out)


def test_executor_options_are_checked_before_work():
    with pytest.raises(ExecutorError, match='not one of'):
        with task_executor('ray', 2):
            pass
    with pytest.raises(ExecutorError, match='--executor dask'):
        with task_executor('local', 2, 'tcp://127.0.0.1:1'):
            pass
    with pytest.raises(ExecutorError, match='workers'):
        with task_executor('dask', 0):
            pass


def _extract_dask_under_ulimit(tmp_path: Path, limit: int) -> subprocess.CompletedProcess:
    import os
    import resource
    bags = _bags(tmp_path, 2, 3)      # two tasks: two workers (no more workers than tasks are started)

    def limited():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    env = dict(os.environ, PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'extract', *map(str, bags), '--out',
                           str(tmp_path / 'ds'), '--executor', 'dask', '--workers', '2'], capture_output=True,
                          text=True, timeout=120, env=env, preexec_fn=limited)


@pytest.mark.parametrize('limit', [12, 32])
def test_a_local_cluster_the_open_file_limit_cannot_hold_is_one_line(tmp_path, limit):
    """ulimit -n 32: 'internal error ... Nanny failed to start' (exit 1) after ~130 lines of distributed's
    tracebacks; ulimit -n 12: a hang writing hundreds of MB of 'Too many open files' to stderr."""
    p = _extract_dask_under_ulimit(tmp_path, limit)
    assert p.returncode == 2, p.stderr[-2000:]
    line, = p.stderr.strip().splitlines()
    assert line.startswith(f'vidseg extract: error: could not start a local Dask cluster (the open-file limit is '
                           f'{limit}, 2 worker(s) need at least ') and line.endswith('); use --executor local'), line


def test_a_local_cluster_that_fails_to_start_is_an_executor_error(monkeypatch, caplog):
    """Past the limit check a start can still fail (the limit is an estimate, no loopback, ...): one line
    with the OS error behind it, and distributed's own logging of the failure kept off stderr."""
    import logging

    import distributed

    def fails(**kwargs):
        logging.getLogger('distributed.nanny').error('Failed to start process')
        try:
            raise OSError(24, 'Too many open files')
        except OSError as e:
            raise RuntimeError('Nanny failed to start.') from e
    monkeypatch.setattr(distributed, 'LocalCluster', fails)
    with caplog.at_level(logging.INFO), pytest.raises(ExecutorError) as e:
        with task_executor('dask', 1):
            pass
    assert str(e.value) == 'could not start a local Dask cluster (Too many open files); use --executor local'
    assert [r for r in caplog.records if r.name.startswith('distributed')] == []


def test_distributed_info_lines_stay_off_a_run(caplog):
    """Each local-cluster run logged ~33 INFO lines (scheduler at, worker registered, closing, ...)."""
    import logging
    with caplog.at_level(logging.INFO):
        with task_executor('dask', 1) as pool:
            assert pool.submit(int, '7').result() == 7
    assert [r.getMessage() for r in caplog.records if r.name.startswith('distributed')
            and r.levelno < logging.WARNING] == []


def test_a_taken_port_8787_is_no_warning(recwarn):
    """Another cluster on the machine (its HTTP server on distributed's default 8787): each run warned
    'Port 8787 is already in use. Perhaps you already have a cluster running?' on stderr."""
    import socket
    import warnings
    with socket.socket() as taken:
        try:
            taken.bind(('127.0.0.1', 8787))
            taken.listen()
        except OSError:
            pass        # already taken by someone else: the same case
        warnings.simplefilter('always')
        with task_executor('dask', 1) as pool:
            assert pool.submit(int, '7').result() == 7
    assert [str(w.message) for w in recwarn if '8787' in str(w.message)] == []
