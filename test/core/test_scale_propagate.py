"""``vidseg propagate`` on long sequences: the work done in the driver grows linearly with the frames. Counted, not
timed: the lines run.py executes (``sys.settrace``) for a sequence of N frames and of 10 N, labelled every 2nd
frame. Before, each job looked for its labels among all the sequence's labels (jobs x labels): 100k frames took
38 s to plan their jobs against 0.5 s for 10k, and an hour-long drive at 30 Hz labelled every 30th frame would
plan for minutes before the first job."""
import sys
from pathlib import Path

from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
from vidseg_ros.data.labelling import run


def _lines_run(fn, filename: str) -> int:
    """Lines of ``filename`` executed while ``fn()`` runs (comprehensions included)."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == 'line':
            count += 1
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename == filename else None
    sys.settrace(calls)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def _index(root: Path, n: int, every: int = 2) -> Path:
    root.mkdir()
    write_index(root, [FrameRecord('s', i, root / 'images' / f'{i}.png',
                                   root / 'labels' / f'{i}.png' if i % every == 0 else None, i + 1,
                                   'human' if i % every == 0 else 'none') for i in range(n)])
    write_meta(root, {'classes': ['a', 'b']})
    return root


def test_job_planning_is_linear_in_the_labels(tmp_path, monkeypatch):
    # the jobs themselves (flow on each stretch) are not what is measured: they do nothing here
    monkeypatch.setattr(run, 'check_frame_sizes', lambda records: None)
    monkeypatch.setattr(run, '_job', lambda args: [])
    monkeypatch.setattr(run, '_job_items', lambda args: iter(()), raising=False)     # as run in this process
    planned = []
    real_split = run.split_jobs
    monkeypatch.setattr(run, 'split_jobs', lambda *a, **k: planned.append(real_split(*a, **k)) or planned[-1])
    counts = []
    for n in (400, 4000):
        root = _index(tmp_path / f'd{n}', n)
        counts.append(_lines_run(lambda: run.propagate_dataset(root), run.__file__))
    assert [len(jobs) for jobs in planned] == [50, 500]     # 4 labels a job: 10 x the jobs, each as long
    # linear: 10 x the frames ran 9.95 x the lines (108 k against 10.8 k); jobs x labels ran 54 x (1.1 M against 21 k)
    assert counts[1] < 13 * counts[0], counts


_TEACHER_PEAK = """
import sys, tracemalloc
import numpy as np
from vidseg_ros.data.labelling.propagate import PropagateConfig
from vidseg_ros.data.labelling.run import propagate_dataset
def predict(rgb):
    return (rgb[..., 0] % 2).astype(np.uint8), np.full(rgb.shape[:2], 0.9, np.float32)
cfg = PropagateConfig(method='teacher')
propagate_dataset(sys.argv[1], cfg, predict)      # imports and caches out of the way
for root in sys.argv[2:]:
    tracemalloc.start()
    propagate_dataset(root, cfg, predict)
    print(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
"""


def _frames(root: Path, n: int, every: int = 2, h: int = 240, w: int = 320) -> Path:
    """``n`` frames of ``h`` x ``w``, human labels on every ``every``-th."""
    import cv2
    import numpy as np
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    recs = []
    for i in range(n):
        image = root / 'images' / f'{i}.png'
        cv2.imwrite(str(image), np.full((h, w, 3), i % 256, np.uint8))
        label = root / 'labels' / f'{i}.png' if i % every == 0 else None
        if label:
            cv2.imwrite(str(label), np.full((h, w), i % 2, np.uint8))
        recs.append(FrameRecord('s', i, image, label, i + 1, 'human' if label else 'none'))
    write_index(root, recs)
    write_meta(root, {'classes': ['a', 'b']})
    return root


def test_a_teacher_job_holds_no_human_label(tmp_path):
    """A teacher job is a whole sequence; it read every human label of it into memory only to skip those frames
    (75 KB each at 320x240): measured with tracemalloc in a fresh process (numpy reports its buffers to it),
    40 frames against 400, labelled every 2nd. Before: a peak of 4.5 MB against 18.8 MB (a 1080p drive of 100k frames
    labelled every 30th: 7 GB); now 4.2 MB for both."""
    import subprocess
    roots = [_frames(tmp_path / name, n) for name, n in (('warm', 4), ('short', 40), ('long', 400))]
    out = subprocess.run([sys.executable, '-c', _TEACHER_PEAK, *map(str, roots)], capture_output=True, text=True,
                         check=True).stdout
    short, long = map(int, out.split())
    # 180 more labels held were 13.5 MB more; the index rows of 360 more frames are well under 2 MB
    assert long - short < 2 * 2**20, (short, long)


def test_a_stopped_teacher_run_keeps_its_labels_and_the_next_does_only_the_rest(tmp_path):
    """A teacher job is a whole sequence, indexed at its end: stopped (Ctrl-C, a crash) at its last frame, every
    label it wrote was unindexed, and the next run predicted the whole sequence again (and, resumed with its
    labels indexed, still predicted every frame to keep its label): the work lost grew with the drive's length.
    Counted: the frames the model sees."""
    from vidseg_ros.data.datasets.layouts import read_index
    from vidseg_ros.data.labelling.propagate import PropagateConfig
    import numpy as np
    import pytest
    root = _frames(tmp_path / 'd', 60, every=10, h=8, w=8)      # 6 human labels, 54 frames for the teacher
    seen = []

    def predict(rgb, stop_at=None):
        if len(seen) == stop_at:
            raise KeyboardInterrupt
        seen.append(int(rgb[0, 0, 0]))
        return np.zeros(rgb.shape[:2], np.uint8), np.ones(rgb.shape[:2], np.float32)
    bar = []
    with pytest.raises(KeyboardInterrupt):
        run.propagate_dataset(root, PropagateConfig(method='teacher'), lambda rgb: predict(rgb, 20), bar.append)
    assert sum(r.label_source == 'teacher' for r in read_index(root)) == 20 and sum(bar) == 20
    first = list(seen)
    seen.clear()
    bar.clear()
    counts = run.propagate_dataset(root, PropagateConfig(method='teacher'), predict, bar.append)
    assert sum(bar) == 60       # every frame of the index, once
    assert len(seen) == 34 and not set(seen) & set(first)       # the rest only
    assert counts['teacher'] == 34 and counts['kept_existing'] == 20 and counts['total_teacher'] == 54


def test_a_stored_job_result_is_not_held_to_the_end_of_the_run(tmp_path, monkeypatch):
    """Every job's future (its result: a tuple and a file name per frame, a few hundred bytes) and its arguments were
    held until the run ended: memory that grew with the dataset, and on a Dask cluster its workers kept every
    result as long. Counted: the futures of jobs already indexed that are still alive when the last is indexed."""
    import contextlib
    import gc
    import weakref
    from concurrent.futures import Future
    made = []

    class Pool:
        def submit(self, fn, arg):
            future = Future()
            future.set_result([])     # the job's frames: none here, only the future's life is counted
            made.append(weakref.ref(future))
            return future
    monkeypatch.setattr(run, 'task_executor', lambda *a, **k: contextlib.nullcontext(Pool()))
    monkeypatch.setattr(run, 'check_frame_sizes', lambda records: None)
    alive = []
    real_store = run._store_job

    def store(*a):
        gc.collect()
        alive.append(sum(ref() is not None for ref in made))
        real_store(*a)
    monkeypatch.setattr(run, '_store_job', store)
    run.propagate_dataset(_index(tmp_path / 'd', 400), workers=2)
    assert len(made) == 50 and len(alive) == 50
    # at the k-th store, the k-1 stored before it are gone: the 50 unstored ones at the first, 1 at the last
    assert alive[0] == 50 and alive[-1] == 1, alive


def test_a_span_whose_spill_would_not_fit_on_the_disk_is_refused_before_its_flows(monkeypatch):
    """A span between two labels keeps 28 bytes a pixel a frame for its second pass, on disk past a budget: labels
    30 s apart in a 1080p drive, 50 GB, filled the dataset's disk, found only when full, after the span's flows.
    Refused before the first flow of the span now, saying how much it needs; where it fits, it runs as before."""
    import collections
    import errno
    import shutil
    import numpy as np
    import pytest
    from vidseg_ros.data.labelling import propagate, spill
    h, w, n = 24, 32, 100
    frames = [np.roll(np.tile(np.arange(w, dtype=np.uint8) * 8, (h, 1)), i, 1)[..., None].repeat(3, 2)
              for i in range(n)]
    label = np.zeros((h, w), np.uint8)
    label[:, 10:] = 1
    need = (n - 2) * h * w * 28     # 98 frames between the labels: 2.1 MB
    monkeypatch.setattr(spill, 'SPILL_BUDGET', 0)
    flows = []
    real_call = propagate.FlowEstimator.__call__
    monkeypatch.setattr(propagate.FlowEstimator, '__call__', lambda self, *a: flows.append(1) or real_call(self, *a))
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage(10**12, 0, need - 1))
    with pytest.raises(OSError) as e:
        list(propagate.iter_propagate_flow(frames, {0: label, n - 1: label}, 2))
    assert e.value.errno == errno.ENOSPC
    assert 'the 98 frames between the labelled frames positions 0 and 99' in str(e.value)
    assert not flows
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage(10**12, 0, need))
    assert len(list(propagate.iter_propagate_flow(frames, {0: label, n - 1: label}, 2))) == n - 2


def test_vidseg_propagate_reads_the_index_once(tmp_path, monkeypatch):
    """``vidseg propagate`` parsed the whole index.csv for its progress bar's total, then again to propagate: 1M rows
    took 16 s and 1 GB more. The total is the index's lines, counted."""
    from vidseg_ros.data.datasets import layouts
    from vidseg_ros.tools import commands_data
    monkeypatch.setattr(run, 'check_frame_sizes', lambda records: None)
    monkeypatch.setattr(run, '_job_items', lambda args: iter(()))
    reads = []
    real_read = layouts.read_index
    monkeypatch.setattr(layouts, 'read_index', lambda *a, **k: reads.append(1) or real_read(*a, **k))
    root = _index(tmp_path / 'd', 400)
    commands_data.propagate(root, progress=True)
    assert len(reads) == 1
    assert commands_data._index_rows(root) == 400
    with open(root / 'index.csv', 'rb+') as f:    # a last line without its line end is a row too
        f.seek(-2, 2)
        f.truncate()
    assert commands_data._index_rows(root) == 400 and commands_data._index_rows(tmp_path / 'none') is None
