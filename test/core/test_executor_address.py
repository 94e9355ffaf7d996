"""The data loop on an existing Dask scheduler (``--executor dask --address``: a fleet's ``dask scheduler`` and
``dask worker``s), which no test ran: the same dataset and labels as the local run, and the user's cluster is
left running (only the client closes), ready for the next command. And an extract on Dask into a dataset that
exists: the same as the local run, the labels kept."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('distributed')

from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag  # noqa: E402
from vidseg_ros.data.datasets.extract import ExtractConfig, extract  # noqa: E402
from vidseg_ros.data.datasets.labels import write_label  # noqa: E402
from vidseg_ros.data.datasets.layouts import read_index, write_index, write_meta  # noqa: E402
from vidseg_ros.data.executors import task_executor  # noqa: E402
from vidseg_ros.data.labelling.propagate import PropagateConfig  # noqa: E402
from vidseg_ros.data.labelling.run import propagate_dataset  # noqa: E402


def _clip(n: int, seed: int, hw=(96, 128)):
    """A textured scene with a bright square moving 2 px a frame, and its masks."""
    bg = np.random.default_rng(seed).integers(0, 160, (*hw, 3), dtype=np.uint8)
    frames, masks = [], []
    for t in range(n):
        img, mask = bg.copy(), np.zeros(hw, np.uint8)
        img[20 + seed * 3:50 + seed * 3, 10 + 2 * t:40 + 2 * t] = (250, 220, 40)
        mask[20 + seed * 3:50 + seed * 3, 10 + 2 * t:40 + 2 * t] = 1
        frames.append(img)
        masks.append(mask)
    return frames, masks


def _bags(root: Path, count: int, frames: int) -> list[Path]:
    for b in range(count):
        write_bag(root / f'drive_{b}', [_clip(frames, b)[0]], BagFromFramesConfig(rate_hz=10, camera_info=False))
    return [root / f'drive_{b}' for b in range(count)]


def _label_every(root: Path, k: int) -> None:
    """Human labels (the clips' masks) on every k-th frame."""
    write_meta(root, {'classes': ['background', 'square'], 'ignore_index': 255, 'fps': 10.0})
    recs = read_index(root)
    for j, r in enumerate(recs):
        if r.index % k == 0:
            mask = _clip(r.index + 1, int(r.sequence.split('_')[1]))[1][r.index]
            recs[j] = replace(r, label=write_label(root / 'labels' / r.sequence / f'{r.stamp_ns}.png', mask),
                              label_source='human')
    write_index(root, recs)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture
def scheduler():
    """A cluster of 2 worker processes that this command did not start: only its address is given."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1',
                      dashboard_address=None) as cluster, Client(cluster) as watcher:
        yield cluster, watcher


def test_extract_and_propagate_on_a_scheduler_at_an_address_equal_the_local_run(tmp_path: Path, scheduler):
    cluster, watcher = scheduler
    address = cluster.scheduler_address
    bags = _bags(tmp_path, 3, 12)
    local, remote = tmp_path / 'local', tmp_path / 'remote'
    extract(bags, local, ExtractConfig())
    assert extract(bags, remote, ExtractConfig(workers=1), executor='dask', address=address).written == 36
    assert _tree(local) == _tree(remote)
    for root in (local, remote):
        _label_every(root, 5)
    cfg = PropagateConfig(method='flow')
    counts = propagate_dataset(local, cfg)
    assert propagate_dataset(remote, cfg, workers=1, executor='dask', address=address) == counts
    assert counts['propagated'] == 27 and _tree(local) == _tree(remote)      # labels and index, byte for byte
    assert {'job', 'bag_task'} <= set(cluster.scheduler.task_prefixes)     # the jobs ran there
    # the user's cluster still runs, its 2 workers too: the run closed its own client only
    assert len(watcher.scheduler_info()['workers']) == 2
    with task_executor('dask', 1, address) as pool:
        assert pool.submit(sum, [1, 2]).result() == 3


def test_a_rerun_on_dask_with_a_bag_named_another_way_keeps_its_labels(tmp_path: Path):
    """An extract on Dask into a dataset that exists (a bag added, a re-run): the same dataset as the local run, with
    the labels a user added since kept. A bag named through a link in one run and by its real path in the next (a
    disk reached through ~/bags -> /mnt/disk/bags) got none of its rows on Dask: its human labels dropped out of the
    index (16 frames, 4 labelled: 0 labelled after the re-run), where the local run kept them."""
    bags = _bags(tmp_path / 'disk', 3, 8)
    (tmp_path / 'link').symlink_to(tmp_path / 'disk')
    linked = [tmp_path / 'link' / b.name for b in bags]
    for where, kw in (('local', {}), ('dask', {'executor': 'dask'})):
        extract(linked[:2], tmp_path / where, ExtractConfig())      # the first run names the bags through the link
        _label_every(tmp_path / where, 4)                            # labels the user added since
        r = extract(bags, tmp_path / where, ExtractConfig(workers=2), **kw)   # real paths, and a third bag
        assert (r.written, r.skipped_existing) == (8, 16)
        recs = read_index(tmp_path / where)
        assert len(recs) == 24 and sum(x.label_source == 'human' for x in recs) == 4, where
    assert _tree(tmp_path / 'local') == _tree(tmp_path / 'dask')     # index, images and labels, byte for byte


def test_relative_folders_on_a_scheduler_whose_workers_run_elsewhere(tmp_path: Path, monkeypatch):
    """A worker started by `dask worker` has a current folder of its own: a relative OUT or DATASET named in a task
    was read and written there. Extract put the 16 frames under the worker's folder (the driver's index: none of
    them, exit 0), propagate failed 'cannot read label file ds/labels/...', the noise variant 'cannot read image
    file ds/images/...'. Now they land in the folders named, as in a local run."""
    from distributed import LocalCluster

    from vidseg_ros.data.datasets.variants import make_variant, write_variant
    from vidseg_ros.data.datasets.layouts import extracted_source
    for where in ('workers', 'local', 'driver'):
        (tmp_path / where).mkdir()
    monkeypatch.chdir(tmp_path / 'workers')        # where the workers are started, and stay
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1',
                      dashboard_address=None) as cluster:
        bags = _bags(tmp_path / 'bags', 2, 8)
        for where, kw in (('local', {}), ('driver', {'executor': 'dask', 'address': cluster.scheduler_address})):
            monkeypatch.chdir(tmp_path / where)
            assert extract(bags, 'ds', ExtractConfig(), **kw).written == 16
            _label_every(Path('ds'), 4)
            assert propagate_dataset('ds', PropagateConfig(method='flow'), **kw)['propagated'] == 12
            src = extracted_source('ds')
            write_variant(make_variant(src, 'noise', n=1, copies=2, sigma=3.0, out='v', **kw), 'v')
    assert not list((tmp_path / 'workers').rglob('*'))
    for name in ('ds', 'v'):
        assert _tree(tmp_path / 'local' / name) == _tree(tmp_path / 'driver' / name), name
