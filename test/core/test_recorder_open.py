"""Opening a bag that cannot be recorded (no room, quota spent) fails with one clear error and leaves
nothing behind: no reserve file, no empty bag folder."""
import errno
import os
from collections import namedtuple

import pytest

from vidseg_ros.data.recorder.core import Recorder

Usage = namedtuple('Usage', 'total used free')
MIN_FREE = 100 << 20


def test_no_room_for_the_reserve_leaves_no_empty_bag(tmp_path):
    # free space passes the start check but not once the reserve that closes the bag is counted
    usage = lambda _path: Usage(1 << 40, 0, MIN_FREE + 1)   # noqa: E731
    with pytest.raises(OSError, match='no room on .* for even one chunk'):
        Recorder(tmp_path / 'bag', min_free_disk_bytes=MIN_FREE, disk_usage=usage, direct_io=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT])
def test_a_spent_quota_is_a_full_disk(tmp_path, monkeypatch, code):
    def no_space(fd, offset, size):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, 'posix_fallocate', no_space)
    with pytest.raises(OSError, match='no room on'):
        Recorder(tmp_path / 'bag', min_free_disk_bytes=0, direct_io=False)
    assert list(tmp_path.iterdir()) == []


def test_a_bag_folder_that_opens_is_kept(tmp_path):
    rec = Recorder(tmp_path / 'bag', min_free_disk_bytes=0, direct_io=False)
    try:
        assert (tmp_path / 'bag').is_dir()
    finally:
        assert rec.stop(timeout=30)


def test_a_snapshot_that_cannot_open_is_a_clear_stop_not_a_bag_to_recover(tmp_path):
    # the recorder runs (snapshot mode), then the disk fills: the snapshot's bag cannot open. Nothing was
    # written, so nothing needs recovering and no folder of it is left
    free = [1 << 40]
    usage = lambda _path: Usage(1 << 41, 0, free[0])   # noqa: E731
    rec = Recorder(tmp_path / 'bag', min_free_disk_bytes=MIN_FREE, disk_usage=usage, direct_io=False,
                   snapshot_mode=True, snapshot_max_duration_s=10.0)
    rec.add_topic('/cam', 'sensor_msgs/msg/Image')
    for i in range(3):
        rec.put('/cam', bytes(100), 10**18 + i * 10**7)
    free[0] = MIN_FREE + 1
    path, _ = rec.trigger_snapshot()
    rec._thread.join(30)
    assert not rec._thread.is_alive() and rec.error and 'no room on' in rec.error
    assert rec.closed_ok and 'bag-recover' not in rec.error, rec.error
    # the error names the snapshot's bag (the base name is never a folder in snapshot mode), and claims no
    # bag closed properly when none was written
    assert rec.error.startswith(f'writing {path} failed') and 'no bag file was written' in rec.error, rec.error
    assert not path.exists() and list(tmp_path.iterdir()) == []
    assert rec.snapshot()['/cam'].dropped == 3


RESERVE_UNDER_LIMIT = r'''
import resource, signal, sys
from vidseg_ros.data.recorder.core import Recorder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))   # the reserve needs ~2 MB
try:
    Recorder(sys.argv[1], min_free_disk_bytes=0, direct_io=False)
except OSError as e:
    print(e)
'''


def test_a_reserve_over_a_file_size_limit_says_what_it_was(tmp_path):
    """A file-size limit below the reserve: the error was "[Errno 27] File too large", naming neither the file
    nor what it was for."""
    import subprocess
    import sys
    bag = tmp_path / 'bag'
    proc = subprocess.run([sys.executable, '-c', RESERVE_UNDER_LIMIT, str(bag)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('\n') == 1 and 'File too large' in proc.stdout, proc.stdout
    assert 'cannot reserve' in proc.stdout and str(bag / '.vidseg_reserve') in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []
