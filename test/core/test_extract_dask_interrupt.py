"""`vidseg extract --executor dask` stopped by SIGTERM or Ctrl-C leaves what the local run leaves: the frames
written so far, an index.csv and the ``.vidseg.extracting`` marker that says the extract did not finish.

A bag is one Dask task and its rows come back only when the task returns, so a run stopped inside the first bag
knew of no row: it left the frames on disk with neither an index nor the marker, a folder that looked like a
finished dataset without its index (the re-run did resume and index them).
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from support.paths import ROOT
from support.waiting import wait_until

from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.layouts import EXTRACTING_NAME, INDEX_NAME, read_index

pytest.importorskip('distributed')
FRAMES = 600


@pytest.mark.parametrize('how', ['SIGTERM', 'Ctrl-C'])
def test_extract_on_dask_interrupted_in_its_first_bag_is_marked_unfinished_and_resumes(tmp_path, how):
    rng = np.random.default_rng(0)
    write_bag(tmp_path / 'bag', [[rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(FRAMES)]])
    out = tmp_path / 'out'
    argv = [sys.executable, '-m', 'vidseg_ros.cli', 'extract', str(tmp_path / 'bag'), '--out', str(out),
            '--executor', 'dask', '--workers', '1']
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    # Ctrl-C in a terminal reaches the whole process group: the driver and the cluster's processes
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        wait_until(lambda: len(list(out.rglob('*.png'))) >= 3 or proc.poll() is not None, 300, 'frames written')
        assert proc.poll() is None, proc.stderr.read()
        if how == 'SIGTERM':
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        with_group = proc.poll() is None
        proc.kill()
        proc.wait()
        assert not with_group, 'the run did not end'
    assert proc.returncode == (143 if how == 'SIGTERM' else 130), err
    assert 'the frames written so far are kept; run the same command again' in err.strip().splitlines()[-1]
    on_disk = sorted(out.rglob('*.png'))
    assert 3 <= len(on_disk) < FRAMES
    assert (out / EXTRACTING_NAME).is_file() and (out / INDEX_NAME).is_file()   # unfinished, as it says
    assert all(r.image.is_file() for r in read_index(out))    # no row for a frame that is not there

    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary['skipped_existing'] + summary['written'] == FRAMES
    assert summary['skipped_existing'] >= len(on_disk) - 1      # a frame being written at the stop is redone
    assert len(read_index(out)) == FRAMES and not (out / EXTRACTING_NAME).exists()
