"""The recorder under a low open-file limit: a split closes its file before it opens the next, so the files it holds do
not grow with the splits or the topics, and it records on with every other descriptor of the process taken."""
import os
import subprocess
import sys
import time

from support.bags import IMAGE, INFO, image_cdr, info_cdr
from support.paths import ROOT

from vidseg_ros.data.bags.reader import read_messages
from vidseg_ros.data.recorder.core import Recorder


def _open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def test_the_files_held_do_not_grow_with_splits_or_topics(tmp_path):
    r = Recorder(tmp_path / 'bag', min_free_disk_bytes=0, chunk_size_bytes=2000, max_bag_size_bytes=4000)
    topics = [f'/cam{k}/image' for k in range(10)] + ['/cam0/camera_info']
    for t in topics:
        r.add_topic(t, INFO if t.endswith('info') else IMAGE)
    held = []
    for i in range(60):
        for t in topics:
            r.put(t, info_cdr(i) if t.endswith('info') else image_cdr(i), 10**9 + i * 10**6)
        if i % 10 == 9:
            deadline = time.monotonic() + 30
            while r.queued_bytes and time.monotonic() < deadline:
                time.sleep(0.01)
            held.append(_open_fds())
    assert r.stop(30) and r.error is None
    assert len(r.files) > 50
    assert max(held) - min(held) <= 1, held     # one file (and the reserve) at a time, whatever the split count
    assert len(list(read_messages(tmp_path / 'bag'))) == 60 * len(topics)


_EXHAUSTED = '''
import os, resource, sys, time
sys.path.insert(0, sys.argv[2])
from support.bags import IMAGE, image_cdr
from vidseg_ros.data.recorder.core import Recorder
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
r = Recorder(sys.argv[1], min_free_disk_bytes=0, chunk_size_bytes=4000)
r.add_topic('/cam', IMAGE)
r.put('/cam', image_cdr(0), 10**9)
while r.queued_bytes: time.sleep(0.01)
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for i in range(1, 41):
    r.put('/cam', image_cdr(i), 10**9 + i)
    if i % 8 == 0:
        r.split()
print(r.stop(30), r.error, len(r.files), r.snapshot()['/cam'].written)
'''


def test_with_every_other_descriptor_taken_splits_go_on(tmp_path):
    p = subprocess.run([sys.executable, '-c', _EXHAUSTED, str(tmp_path / 'bag'), str(ROOT / 'test')],
                       capture_output=True, text=True, timeout=120, env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ['True', 'None', '5', '41'], p.stdout + p.stderr
    warnings = []
    assert [m.log_time_ns for m in read_messages(tmp_path / 'bag', warnings=warnings)] == [10**9 + i for i in range(41)]
    assert warnings == []
