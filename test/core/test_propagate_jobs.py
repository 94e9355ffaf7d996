"""Propagation jobs carry file names, not label arrays: what goes to a worker (a process pool's pipe, a
Dask graph) stays small however large the labels are, and the driver never loads them all at once."""
import contextlib
import pickle
from concurrent.futures import Future

import numpy as np

from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import read_index
from vidseg_ros.data.labelling import run
from vidseg_ros.data.labelling.propagate import PropagateConfig


class PicklingExecutor:
    """Runs jobs in this process after a pickle round trip, as a pool would; records each job's size."""

    def __init__(self):
        self.sizes = []

    def submit(self, fn, arg):
        blob = pickle.dumps(arg)
        self.sizes.append(len(blob))
        future = Future()
        future.set_result(fn(pickle.loads(blob)))
        return future


def test_jobs_are_small_and_labels_come_out_the_same(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    h, w = 240, 320      # 77 kB per label: a job carrying two arrays would be > 150 kB
    frames = [np.roll(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), 2 * i, 1) for i in range(5)]
    masks = [np.zeros((h, w), np.uint8) for _ in frames]
    for i, m in enumerate(masks):
        m[60:140, 40 + 2 * i:120 + 2 * i] = 1
    write_bag(tmp_path / 'bag', [frames])
    extract([tmp_path / 'bag'], tmp_path / 'ds')
    recs = read_index(tmp_path / 'ds')
    for i in (0, 4):
        write_label(tmp_path / 'lab' / f'{recs[i].stamp_ns}.png', masks[i])
    import_labels(tmp_path / 'ds', tmp_path / 'lab', class_names=['bg', 'obj'])

    pool = PicklingExecutor()
    monkeypatch.setattr(run, 'task_executor', lambda *a, **k: contextlib.nullcontext(pool))
    counts = run.propagate_dataset(tmp_path / 'ds', PropagateConfig(), workers=2)
    assert counts['propagated'] == 3
    assert pool.sizes and max(pool.sizes) < 20_000, pool.sizes
    after = read_index(tmp_path / 'ds')
    assert [r.label_source for r in after] == ['human'] + ['propagated'] * 3 + ['human']
