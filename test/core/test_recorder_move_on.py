"""Another program fills the disk between two free-space checks while another output directory is configured
(small tmpfs mounts; skipped without root): the message whose chunk hit ENOSPC goes into the released reserve,
the bag is closed, and recording goes on in the next directory, beside a bag of the same name already there."""
import shutil
import subprocess

import pytest

from support.bags import IMAGE, image_cdr, mount_tmpfs, read_rosbags
from support.disk import fill
from support.waiting import wait_until

from vidseg_ros.data.bags.recover import is_complete
from vidseg_ros.data.recorder.core import Recorder


@pytest.fixture
def two_disks(tmp_path):
    disks = [tmp_path / 'a', tmp_path / 'b']
    try:
        for disk in disks:
            mount_tmpfs(disk, 40)
        yield disks
    finally:
        for disk in disks:
            subprocess.run(['umount', '-l', str(disk)], check=False, capture_output=True)


def test_enospc_moves_on_without_losing_or_repeating_a_message(two_disks):
    a, b = two_disks
    (b / 'bags' / 'bag').mkdir(parents=True)   # another run's bag: never written into
    real, frozen = shutil.disk_usage, []
    usage = lambda p: frozen[0] if frozen and str(p).startswith(str(a)) else real(p)   # noqa: E731
    rec = Recorder(a / 'bag', chunk_size_bytes=1 << 20, min_free_disk_bytes=0, next_output_dirs=[b / 'bags'],
                   disk_usage=usage)
    rec.add_topic('/cam', IMAGE)
    sent = [image_cdr(i, 720, 1280) for i in range(10)]
    for i in range(3):
        rec.put('/cam', sent[i], 1000 + i)
    wait_until(lambda: rec.snapshot()['/cam'].written == 3, what='three frames written')
    frozen.append(real(a))   # the recorder still believes this free space
    fill(a)      # another program takes every free byte
    for i in range(3, 10):
        rec.put('/cam', sent[i], 1000 + i)
    assert rec.stop(timeout=60) and rec.error is None
    assert rec.bags == [a / 'bag', b / 'bags' / 'bag_1'] and not any((b / 'bags' / 'bag').iterdir())
    parts = [[d for _, d in read_rosbags([bag])] for bag in rec.bags]
    assert all(parts) and parts[0] + parts[1] == sent      # each message once, in order
    assert all(is_complete(p) for p in rec.files) and rec.snapshot()['/cam'].dropped == 0


def test_enospc_in_the_periodic_flush_of_a_slow_topic_closes_the_bag(two_disks):
    """Small messages never fill a chunk: the periodic flush (each second) is the write that meets the full disk.
    Without another directory, recording stops, the bag closed with what the flush put in it."""
    import time
    a, _ = two_disks
    real, frozen, errors = shutil.disk_usage, [], []
    rec = Recorder(a / 'bag', chunk_size_bytes=1 << 20, min_free_disk_bytes=0, on_error=errors.append,
                   disk_usage=lambda p: frozen[0] if frozen else real(p))
    rec.add_topic('/cam', IMAGE)
    frozen.append(real(a))
    fill(a)
    sent = [image_cdr(i, 40, 60) for i in range(30)]
    for i, data in enumerate(sent):
        rec.put('/cam', data, 1000 + i)
        time.sleep(0.1)   # a slow topic: the chunk's age, not its size, ends it
    rec._thread.join(30)
    assert len(errors) == 1 and 'ENOSPC' in errors[0] and 'bag closed properly' in errors[0], errors
    c = rec.snapshot()['/cam']
    assert c.written > 0 and c.written + c.dropped == len(sent)
    assert rec.closed_ok and all(is_complete(p) for p in rec.files)
    assert [d for _, d in read_rosbags([a / 'bag'])] == sent[:c.written]
