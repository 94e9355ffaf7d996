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
