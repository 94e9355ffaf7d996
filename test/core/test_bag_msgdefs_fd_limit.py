"""A topic that appears while every descriptor of the recorder's process is taken (ulimit -n reached): its definition
is read from the .msg files then (and rosbags' typestore imported, for a type without them). That was 'Too many open
files: .../CameraInfo.msg' and the recording stopped; now the topic is recorded with its full definition and hash."""
import pickle
import subprocess
import sys

from mcap.reader import make_reader
from support.bags import IMAGE, INFO, image_cdr, info_cdr
from support.paths import ROOT

from vidseg_ros.data.bags.msgdefs import message_definition
from vidseg_ros.data.bags.reader import read_messages

ODOM = 'nav_msgs/msg/Odometry'    # no .msg installed here: from the typestore, which is imported then

_EXHAUSTED = f'''
IMAGE, INFO, ODOM = {IMAGE!r}, {INFO!r}, {ODOM!r}
import os, pickle, resource, sys, time
from vidseg_ros.data.recorder.core import Recorder
with open(sys.argv[2], 'rb') as f:
    messages = pickle.load(f)     # made by the test: support.bags imports the typestore
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
r = Recorder(sys.argv[1], min_free_disk_bytes=0, chunk_size_bytes=4000)
r.add_topic('/cam', IMAGE)
r.put('/cam', messages[0], 10**9)
while r.queued_bytes: time.sleep(0.01)
assert 'rosbags.typesys' not in sys.modules
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
r.add_topic('/info', INFO)
r.add_topic('/odom', ODOM)
for i in range(1, 11):
    r.put('/info', messages[i], 10**9 + i)
print(r.stop(30), r.error)
'''


def test_a_topic_that_appears_with_every_descriptor_taken_gets_its_definition(tmp_path):
    bag, messages = tmp_path / 'bag', tmp_path / 'messages.pickle'
    messages.write_bytes(pickle.dumps([bytes(image_cdr(0))] + [bytes(info_cdr(i)) for i in range(1, 11)]))
    p = subprocess.run([sys.executable, '-c', _EXHAUSTED, str(bag), str(messages)],
                       capture_output=True, text=True, timeout=120,
                       env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'AMENT_PREFIX_PATH': sys.prefix})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ['True', 'None'], p.stdout + p.stderr   # old: 'writing ... failed: [Errno 24] ...'
    with open(bag / 'bag_0.mcap', 'rb') as f:
        summary = make_reader(f).get_summary()
    schemas = {s.name: s.data.decode() for s in summary.schemas.values()}
    hashes = {c.topic: c.metadata['topic_type_hash'] for c in summary.channels.values()}
    for topic, msgtype in [('/info', INFO), (('/odom', ODOM))]:
        definition, type_hash = message_definition(msgtype)
        assert definition and schemas[msgtype] == definition, msgtype
        assert type_hash and hashes[topic] == type_hash, msgtype
    assert [m.topic for m in read_messages(bag)] == ['/cam'] + ['/info'] * 10
