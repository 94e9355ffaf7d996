"""A snapshot bigger than the disk (a small tmpfs mounted by the test; skipped without root): the snapshot
bag ends readable with what fitted, the rest is counted dropped, and the error names that bag."""
import subprocess

import pytest

from support.bags import IMAGE, image_cdr, mount_tmpfs, read_rosbags

from vidseg_ros.data.bags.recover import is_complete
from vidseg_ros.data.recorder.core import Recorder

N = 20  # 1280x720 rgb8: 55 MB into 40 MB


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / 'fs'
    mount_tmpfs(mnt, 40)
    yield mnt
    subprocess.run(['umount', '-l', str(mnt)], check=False)


def test_a_snapshot_larger_than_the_disk_keeps_what_fitted(small_fs):
    """The error named <disk>/bag, a folder that snapshot mode never creates, instead of the snapshot bag."""
    errors = []
    rec = Recorder(small_fs / 'bag', snapshot_mode=True, snapshot_max_bytes=1 << 30, chunk_size_bytes=4 << 20,
                   min_free_disk_bytes=0, queue_max_bytes=1 << 30, on_error=errors.append)
    rec.add_topic('/cam', IMAGE)
    sent = [image_cdr(i, 720, 1280) for i in range(N)]
    for i, data in enumerate(sent):
        rec.put('/cam', data, 1000 + i)
    snap, _ = rec.trigger_snapshot()
    rec._thread.join(60)
    assert not rec._thread.is_alive() and rec.state == 'error' and len(errors) == 1
    error = errors[0]
    assert '\n' not in error and f'free on {snap} (' in error and 'bag closed properly' in error, error
    assert not (small_fs / 'bag').exists()
    c = rec.snapshot()['/cam']
    assert 0 < c.written < N and c.written + c.dropped == N and c.expired == 0
    assert rec.closed_ok and all(is_complete(p) for p in rec.files)
    assert [d for _, d in read_rosbags([snap])] == sent[:c.written]
    assert rec.trigger_snapshot() == (None, 'recording has stopped')
