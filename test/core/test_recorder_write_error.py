"""A write that fails (EFBIG: a file-size limit, RLIMIT_FSIZE lowered in a child process) still ends with a
readable bag: the file is cut back to its last complete chunk and closed there, metadata.yaml written.

Before, the file was left without a summary and the folder without metadata.yaml: rosbags refused it
(`Expected metadata file ... does not exist`) until `vidseg bag-recover` rewrote it elsewhere.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from support.bags import IMAGE, TS, read_mcap, read_rosbags

from vidseg_ros.data.bags.recover import is_intact
from vidseg_ros.data.bags.writer import BagWriter
from vidseg_ros.data.recorder.seal import seal

N = 40
LIMIT = 8 << 20  # RLIMIT_FSIZE of the recording process: the reserve (~2 MB) fits, 40 frames of 300 kB do not

RECORD = r'''
import json, resource, signal, sys
from pathlib import Path
from vidseg_ros.data.recorder.core import Recorder
bag, limit, compression, frames = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit raises EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
errors = []
rec = Recorder(bag, compression=compression, chunk_size_bytes=1 << 20, min_free_disk_bytes=0,
               on_error=errors.append)
rec.add_topic('/cam', 'sensor_msgs/msg/Image')
split_at = int(sys.argv[5]) if len(sys.argv) > 5 else -1
for i, data in enumerate(json.loads(frames.read_text())):
    if i == split_at:
        rec.split()
    rec.put('/cam', bytes.fromhex(data), 1000 + i)
rec._thread.join(60)  # the writer thread ends on its own at the write error
c = rec.snapshot()['/cam']
print(json.dumps({'errors': errors, 'written': c.written, 'dropped': c.dropped, 'closed_ok': rec.closed_ok,
                  'files': [str(p) for p in rec.files], 'alive': rec._thread.is_alive()}))
'''


def noisy_frame(i: int, rng) -> bytes:
    """A valid 320x320 rgb8 Image whose pixels do not compress (zstd and lz4 chunks stay full size)."""
    T = TS.types
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i, nanosec=0), frame_id='cam')
    data = rng.integers(0, 256, 320 * 320 * 3, dtype=np.uint8)
    return TS.serialize_cdr(T[IMAGE](header=header, height=320, width=320, encoding='rgb8', is_bigendian=0,
                                     step=320 * 3, data=data), IMAGE)


@pytest.mark.parametrize('compression', ['none', 'zstd'])
def test_file_size_limit_ends_with_a_readable_bag(tmp_path, compression):
    rng = np.random.default_rng(0)
    sent = [noisy_frame(i, rng) for i in range(N)]
    (tmp_path / 'frames.json').write_text(json.dumps([d.hex() for d in sent]))
    bag = tmp_path / 'bag'
    proc = subprocess.run([sys.executable, '-c', RECORD, str(bag), str(LIMIT), compression,
                           str(tmp_path / 'frames.json')], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert not result['alive'] and len(result['errors']) == 1
    error = result['errors'][0]
    assert 'File too large' in error and 'cut back to its last complete chunk and closed there' in error, error
    assert 'bag closed properly' in error and 'NOT closed' not in error and result['closed_ok']
    written = result['written']
    assert written >= 10 and written + result['dropped'] == N   # every message written or counted dropped
    (mcap_file,) = (Path(p) for p in result['files'])
    assert is_intact(mcap_file) and (bag / 'metadata.yaml').exists()
    # metadata.yaml counts what the sealed file holds (read from it), not what the writer had taken in
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['message_count'] == written and meta['files'][0]['message_count'] == written
    assert mcap_file.stat().st_size <= LIMIT
    # both readers, as they are (no recovery step): exactly the messages counted written, in order
    assert read_rosbags([bag]) == [('/cam', d) for d in sent[:written]]
    assert read_mcap(mcap_file) == [('/cam', d) for d in sent[:written]]



def test_a_write_error_after_a_split_keeps_the_closed_file(tmp_path):
    """The second file hits the limit: it is closed at its last chunk, and metadata.yaml lists both files (the
    first one, closed by the split, with all its messages)."""
    rng = np.random.default_rng(4)
    sent = [noisy_frame(i, rng) for i in range(N)]
    (tmp_path / 'frames.json').write_text(json.dumps([d.hex() for d in sent]))
    bag = tmp_path / 'bag'
    proc = subprocess.run([sys.executable, '-c', RECORD, str(bag), str(LIMIT), 'none', str(tmp_path / 'frames.json'),
                           '10'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result['errors']) == 1 and 'bag_1.mcap failed' in result['errors'][0], result['errors']
    assert '2 file(s)' in result['errors'][0] and result['closed_ok']
    written = result['written']
    assert 10 < written < N and written + result['dropped'] == N
    files = [Path(p) for p in result['files']]
    assert [p.name for p in files] == ['bag_0.mcap', 'bag_1.mcap'] and all(is_intact(p) for p in files)
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert [(f['path'], f['message_count']) for f in meta['files']] == [('bag_0.mcap', 10),
                                                                         ('bag_1.mcap', written - 10)]
    assert read_rosbags([bag]) == [('/cam', d) for d in sent[:written]]


def test_a_reserve_that_cannot_grow_counts_the_written_message_once(tmp_path):
    """A file-size limit (3 MB) that the reserve outgrows before the bag file does: growing it after a chunk failed
    with EFBIG, and the message that had just completed the chunk was counted written and dropped (4 written + 8
    dropped of 11 sent)."""
    rng = np.random.default_rng(5)
    sent = [noisy_frame(i, rng) for i in range(N)]
    (tmp_path / 'frames.json').write_text(json.dumps([d.hex() for d in sent]))
    bag = tmp_path / 'bag'
    proc = subprocess.run([sys.executable, '-c', RECORD, str(bag), '3000000', 'none', str(tmp_path / 'frames.json')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result['errors']) == 1 and 'cannot reserve' in result['errors'][0], result['errors']
    assert 'bag closed properly' in result['errors'][0] and result['closed_ok']
    written = result['written']
    assert written > 0 and written + result['dropped'] == N
    assert read_rosbags([bag]) == [('/cam', d) for d in sent[:written]]


STREAM = r'''
import json, resource, signal, sys, time
from pathlib import Path
from vidseg_ros.data.recorder.core import Recorder
bag, frames = Path(sys.argv[1]), [bytes.fromhex(d) for d in json.loads(Path(sys.argv[2]).read_text())]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, resource.RLIM_INFINITY))
rec = Recorder(bag, chunk_size_bytes=1 << 20, min_free_disk_bytes=0, on_error=lambda error: None)
rec.add_topic('/cam', 'sensor_msgs/msg/Image')
i = 0
while rec._thread.is_alive() or i < 100:    # a camera does not stop while the bag is being closed
    rec.put('/cam', frames[i % len(frames)], 1000 + i)
    i += 1
    time.sleep(0.0005)    # a fast camera, not a full queue (whose drops were counted)
c = rec.snapshot()['/cam']
print(json.dumps({'received': c.received, 'written': c.written, 'dropped': c.dropped}))
'''


def test_messages_put_while_a_failed_bag_closes_are_counted(tmp_path):
    """The queue's remainder was counted dropped before the bag was closed, but it took new messages until after:
    those were neither written nor counted (received 100 = written 24 + dropped 39, 37 counted nowhere)."""
    rng = np.random.default_rng(6)
    (tmp_path / 'frames.json').write_text(json.dumps([noisy_frame(i, rng).hex() for i in range(4)]))
    proc = subprocess.run([sys.executable, '-c', STREAM, str(tmp_path / 'bag'), str(tmp_path / 'frames.json')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = json.loads(proc.stdout.splitlines()[-1])
    assert c['written'] > 0 and c['received'] == c['written'] + c['dropped'], c

def test_seal_closes_a_file_cut_at_a_chunk_and_refuses_a_torn_one(tmp_path):
    """The unit: a file cut after a complete chunk is closed where it ends; one cut inside a record is left
    untouched (ValueError); an empty file (cut before its first chunk) becomes a valid empty MCAP."""
    rng = np.random.default_rng(1)
    sent = [noisy_frame(i, rng) for i in range(6)]
    writer = BagWriter(tmp_path / 'bag', chunk_size_bytes=1 << 20, direct_io=False)
    writer.add_topic('/cam', IMAGE)
    for i, data in enumerate(sent):
        writer.write('/cam', data, 1000 + i)
    kept = len(sent) - writer.pending_counts['/cam']   # the rest is in the chunk being filled
    path = writer.abandon()   # as after a failed write: back to the last complete chunk
    assert 0 < kept < len(sent) and seal(path) == kept and is_intact(path)
    assert read_mcap(path) == [('/cam', d) for d in sent[:kept]]

    torn = tmp_path / 'torn.mcap'
    torn.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    before = torn.read_bytes()
    with pytest.raises(ValueError, match='ends inside a record'):
        seal(torn)
    assert torn.read_bytes() == before

    empty = tmp_path / 'empty.mcap'
    empty.touch()
    assert seal(empty) == 0 and is_intact(empty) and read_mcap(empty) == []


@pytest.mark.parametrize('failing', ['write', 'close'])
def test_an_error_without_words_is_named_by_its_type(tmp_path, monkeypatch, failing):
    """mcap raised EndOfFile() (no message) closing a file whose chunk had failed: the error read
    "closing ... failed ()", which said nothing."""
    from mcap.exceptions import EndOfFile

    from vidseg_ros.data.recorder.core import Recorder

    def fail(*args, **kwargs):
        raise EndOfFile()
    monkeypatch.setattr(BagWriter, failing, fail)
    errors = []
    rec = Recorder(tmp_path / 'bag', min_free_disk_bytes=0, direct_io=False, on_error=errors.append)
    rec.add_topic('/cam', IMAGE)
    rec.put('/cam', noisy_frame(0, np.random.default_rng(2)), 1000)
    rec.stop(30)
    assert len(errors) == 1 and '()' not in errors[0] and 'mcap.exceptions.EndOfFile, no message' in errors[0], errors


def test_seal_refuses_messages_outside_chunks(tmp_path):
    """An unchunked MCAP (messages at the top level) was "sealed" with statistics of 0 messages and no index
    for the 3 it held: refused now, the file left as it was."""
    import io

    from mcap.writer import Writer
    buf = io.BytesIO()
    writer = Writer(buf, use_chunking=False)
    writer.start('ros2', 'test')
    channel = writer.register_channel('/cam', 'cdr', writer.register_schema(IMAGE, 'ros2msg', b''))
    for i in range(3):
        writer.add_message(channel, log_time=i, data=b'abc', publish_time=i)
    path = tmp_path / 'unchunked.mcap'
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match='message outside any chunk at byte'):
        seal(path)
    assert path.read_bytes() == buf.getvalue()


SEAL_UNDER_LIMIT = r'''
import resource, signal, sys
from vidseg_ros.data.recorder.seal import seal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
seal(sys.argv[1])
'''


def test_a_seal_that_cannot_write_its_tail_leaves_the_file_as_it_was(tmp_path):
    """No room for the summary (a file-size limit 100 bytes above the file): OSError, and the part of the tail
    that fitted is cut off again, so the file still ends on its last chunk (bag-recover, or a later seal)."""
    writer = BagWriter(tmp_path / 'bag', chunk_size_bytes=1 << 20, direct_io=False)
    writer.add_topic('/cam', IMAGE)
    sent = [noisy_frame(i, np.random.default_rng(3)) for i in range(6)]
    for i, data in enumerate(sent):
        writer.write('/cam', data, 1000 + i)
    path = writer.abandon()
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, '-c', SEAL_UNDER_LIMIT, str(path), str(len(before) + 100)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and 'OSError: [Errno 27] File too large' in proc.stderr, proc.stderr[-2000:]
    assert path.read_bytes() == before
    kept = seal(path)
    assert kept and read_mcap(path) == [('/cam', d) for d in sent[:kept]]
