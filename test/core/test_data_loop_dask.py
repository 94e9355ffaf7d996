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
    me = psutil.Process()
    return [p.pid for p in me.children(recursive=True)
            if any('spawn_main' in a or 'forkserver' in a for a in p.cmdline()) and p.children() == []]


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
