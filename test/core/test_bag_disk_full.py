"""Recorder on a full file system (a small tmpfs mounted by the test): the bag always ends readable.

Needs root to mount; skipped with the reason otherwise. Frames are camera-sized (1280x720 rgb8).
"""
import errno
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from support.bags import IMAGE, image_cdr, mount_tmpfs, read_mcap, read_rosbags
from support.disk import fill
from support.waiting import wait_until

from vidseg_ros.data.bags.recover import is_complete
from vidseg_ros.data.recorder import sink
from vidseg_ros.data.recorder.core import Recorder
from vidseg_ros.data.recorder.disk_space import RESERVE_NAME


@pytest.fixture(params=['tmpfs', 'ext4'])
def small_fs(tmp_path, request):
    mnt = tmp_path / 'fs'
    mount_tmpfs(mnt, 40 if request.param == 'tmpfs' else 48, request.param)  # ext4 keeps ~8 MB itself
    yield mnt
    subprocess.run(['umount', '-l', str(mnt)], check=False)


def frames(n: int):
    return [image_cdr(i, 720, 1280) for i in range(n)]


def wait_stopped(rec: Recorder, timeout: float = 30.0) -> None:
    rec._thread.join(timeout)
    assert not rec._thread.is_alive(), 'the recorder did not stop'


def check_readable(bag: Path, rec: Recorder) -> int:
    """Both readers read the whole bag; the count equals what the recorder reports written."""
    c = rec.snapshot()['/cam']
    assert rec.closed_ok and all(is_complete(p) for p in rec.files)
    assert (bag / 'metadata.yaml').exists() and not (bag / RESERVE_NAME).exists()
    assert len(read_rosbags([bag])) == c.written == sum(len(read_mcap(p)) for p in rec.files)
    return c.written


@pytest.mark.parametrize('min_free', [0, 8 << 20])
def test_stops_before_the_disk_fills(small_fs, min_free):
    errors = []
    rec = Recorder(small_fs / 'bag', chunk_size_bytes=4 << 20, min_free_disk_bytes=min_free,
                   queue_max_bytes=1 << 30, on_error=errors.append)
    rec.add_topic('/cam', IMAGE)
    sent = frames(20)  # 55 MB into 40 MB
    for i, data in enumerate(sent):
        rec.put('/cam', data, 1000 + i)
    wait_stopped(rec)
    assert rec.state == 'error' and errors and 'disk nearly full' in errors[0] and 'closed properly' in errors[0]
    written = check_readable(small_fs / 'bag', rec)
    c = rec.snapshot()['/cam']
    assert written >= 5 and c.written + c.dropped == 20
    assert shutil.disk_usage(small_fs).free >= min_free
    assert [d for _, d in read_rosbags([small_fs / 'bag'])] == sent[:written]


def test_enospc_from_another_program_closes_with_the_reserve(small_fs):
    """Another program fills the disk between two free-space checks: the reserve closes the bag."""
    real, frozen = shutil.disk_usage, []
    errors = []
    rec = Recorder(small_fs / 'bag', chunk_size_bytes=1 << 20, min_free_disk_bytes=0,
                   disk_usage=lambda p: frozen[0] if frozen else real(p), on_error=errors.append)
    rec.add_topic('/cam', IMAGE)
    sent = frames(6)
    for i in range(3):
        rec.put('/cam', sent[i], 1000 + i)
    wait_until(lambda: rec.snapshot()['/cam'].written == 3, what='three frames written')
    frozen.append(real(small_fs))  # the recorder still believes this free space
    fill(small_fs)  # another program takes every free byte
    for i in range(3, 6):
        rec.put('/cam', sent[i], 1000 + i)
    wait_stopped(rec)
    assert errors and 'ENOSPC' in errors[0] and 'closed properly' in errors[0]
    written = check_readable(small_fs / 'bag', rec)
    assert written >= 4  # the message whose chunk hit ENOSPC went into the released reserve
    assert written + rec.snapshot()['/cam'].dropped == 6
    assert [d for _, d in read_rosbags([small_fs / 'bag'])] == sent[:written]


def test_goes_on_in_the_next_output_dir(small_fs, tmp_path):
    """A nearly full disk with another output directory configured: bag closed, recording goes on there."""
    other = tmp_path / 'fs2'
    mount_tmpfs(other, 40)
    try:
        rec = Recorder(small_fs / 'bag', chunk_size_bytes=4 << 20, min_free_disk_bytes=0,
                       next_output_dirs=[other / 'bags'])
        rec.add_topic('/cam', IMAGE)
        sent = frames(18)  # 50 MB: more than one 40 MB disk holds
        for i, data in enumerate(sent):
            rec.put('/cam', data, 1000 + i)
        assert rec.stop(timeout=60) and rec.error is None
        assert rec.bags == [small_fs / 'bag', other / 'bags' / 'bag']
        parts = [[d for _, d in read_rosbags([b])] for b in rec.bags]
        assert all(parts) and parts[0] + parts[1] == sent  # nothing lost at the switch
        assert all(is_complete(p) for p in rec.files) and rec.snapshot()['/cam'].dropped == 0
    finally:
        subprocess.run(['umount', '-l', str(other)], check=False)


@pytest.mark.parametrize('no_room_after_the_cut', [False, True])
def test_last_resort_cuts_back_to_the_last_chunk(small_fs, tmp_path, monkeypatch, no_room_after_the_cut):
    """Even the reserve is gone: the file is cut back to its last complete chunk and closed there (the cut
    gives back the room the summary needs). Only if even that fails is it left, complete chunks kept, for
    `vidseg bag-recover`, and nothing claims it closed."""
    if no_room_after_the_cut:   # a disk taken again by another program right after the cut
        def no_room(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(sink, 'seal', no_room)
    errors = []
    rec = Recorder(small_fs / 'bag', chunk_size_bytes=1 << 20, min_free_disk_bytes=0,
                   disk_usage=lambda p: Usage(0, 0, 1 << 40), on_error=errors.append)  # blind check
    rec.add_topic('/cam', IMAGE)
    # As if another program had taken the reserve's space as well: nothing is held back.
    os.unlink(rec._sink.space.reserve_path)
    rec._sink.space.reserved, rec._sink.space.reserve = 0, lambda nbytes: True
    for i, data in enumerate(frames(20)):
        rec.put('/cam', data, 1000 + i)
    wait_stopped(rec)
    c = rec.snapshot()['/cam']
    assert c.written + c.dropped == 20 and c.written >= 5
    if not no_room_after_the_cut:
        assert errors and 'closed there' in errors[0] and 'NOT closed' not in errors[0]
        check_readable(small_fs / 'bag', rec)   # as it is, no recovery step
        return
    assert not rec.closed_ok and errors and 'NOT closed' in errors[0] and 'closed properly' not in errors[0]
    assert 'closing it at its last complete chunk failed too' in errors[0]
    recover = [sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', str(small_fs / 'bag'), '--force']
    result = subprocess.run(recover, capture_output=True, text=True, timeout=120)  # next to it: no room
    assert result.returncode == 2 and '--out' in result.stderr and result.stderr.count('\n') == 1
    assert sorted(p.name for p in small_fs.iterdir() if p.name != 'lost+found') == ['bag']  # nothing left
    out = tmp_path / 'recovered'
    result = subprocess.run(recover + ['--out', str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(read_rosbags([out])) == c.written  # readable == reported written


Usage = namedtuple('Usage', 'total used free')
