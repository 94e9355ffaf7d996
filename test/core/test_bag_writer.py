"""BagWriter / Recorder / recovery without ROS: tiny bags in tmp_path read back by rosbags and mcap."""
import threading
from collections import namedtuple

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from support.bags import IMAGE, INFO, TS, image_cdr, info_cdr, read_mcap, read_rosbags
from support.waiting import FakeClock, wait_until

from vidseg_ros.data.bags.recover import RecoveryRefused, is_complete, recover_bag
from vidseg_ros.data.bags.writer import BagExistsError, BagWriter, mcap_files, bag_qos_profile
from vidseg_ros.data.bags.msgdefs import message_definition
from vidseg_ros.data.recorder import core, sink
from vidseg_ros.data.recorder.core import Recorder, new_bag_dir


def test_definitions_are_complete():
    text, type_hash = message_definition(IMAGE)
    assert text.count('MSG: ') == 2 and 'MSG: std_msgs/msg/Header' in text
    assert type_hash == TS.hash_rihs01(IMAGE)
    text, _ = message_definition(INFO)
    assert 'MSG: sensor_msgs/msg/RegionOfInterest' in text


@pytest.mark.parametrize('compression', ['none', 'zstd', 'lz4'])
def test_roundtrip_split_files_open_alone(tmp_path, compression):
    bag = tmp_path / 'bag'
    w = BagWriter(bag, compression=compression, chunk_size_bytes=4000, max_bag_size_bytes=9000)
    w.add_topic('/cam/image', IMAGE, [bag_qos_profile()])
    w.add_topic('/cam/camera_info', INFO, [bag_qos_profile(depth=10)])
    sent = []
    for i in range(12):
        for topic, data in (('/cam/image', image_cdr(i)), ('/cam/camera_info', info_cdr(i))):
            w.write(topic, data, 1_000_000_000 + i * 1000)
            sent.append((topic, data))
    w.close()
    assert len(w.files) > 2 and mcap_files(bag) == w.files
    assert read_rosbags([bag]) == sent  # whole bag through metadata.yaml
    per_file = [read_mcap(p) for p in w.files]  # every file decodes on its own
    assert [m for msgs in per_file for m in msgs] == sent
    for p in w.files:
        assert read_rosbags([p]) == read_mcap(p)
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] == 9 and meta['message_count'] == 24
    assert meta['relative_file_paths'] == [p.name for p in w.files]
    topics = {t['topic_metadata']['name']: t for t in meta['topics_with_message_count']}
    assert topics['/cam/image']['message_count'] == 12
    assert topics['/cam/image']['topic_metadata']['type_description_hash'].startswith('RIHS01_')
    with open(w.files[0], 'rb') as f:
        summary = make_reader(f).get_summary()
    assert summary.chunk_indexes and summary.statistics.message_count > 0
    with open(w.files[0], 'rb') as f:
        reader = make_reader(f)
        assert reader.get_header().profile == 'ros2'
        (record,) = [m for m in reader.iter_metadata() if m.name == 'rosbag2']
    info = yaml.safe_load(record.metadata['serialized_metadata'])
    assert info['relative_file_paths'] == [w.files[0].name] and info['version'] == 9
    assert info['message_count'] == sum(t['message_count'] for t in info['topics_with_message_count'])


def test_duration_split_holds_when_the_clock_jumps_back(tmp_path):
    """A looping bag's /clock jumps back: the split compared the time since the file's first message, which
    stayed negative, so one file of a 2 s limit grew to cover 39 s."""
    w = BagWriter(tmp_path / 'bag', max_bag_duration_s=2.0)
    w.add_topic('/cam/image', IMAGE, [bag_qos_profile()])
    s = 1_000_000_000
    stamps = [1000 * s + i * s // 2 for i in range(8)] + [961 * s + i * s // 2 for i in range(8)]
    for i, t in enumerate(stamps):
        w.write('/cam/image', image_cdr(i), t)
    w.close()
    meta = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    spans = [f['duration']['nanoseconds'] for f in meta['files']]
    assert max(spans) < 2 * s, spans
    assert sum(f['message_count'] for f in meta['files']) == 16


def test_never_overwrites(tmp_path):
    first = new_bag_dir(tmp_path, 'x')
    BagWriter(first).close()
    second = new_bag_dir(tmp_path, 'x')
    assert second != first
    with pytest.raises(BagExistsError):
        BagWriter(first)


def test_recover_truncated_file(tmp_path):
    bag = tmp_path / 'bag'
    w = BagWriter(bag, chunk_size_bytes=100)  # every message closes its own chunk
    w.add_topic('/cam/image', IMAGE)
    sent = [image_cdr(i) for i in range(10)]
    for i, data in enumerate(sent):
        w.write('/cam/image', data, 1000 + i)
    path = w.current_path  # abandoned without close(), as after SIGKILL: no summary, no metadata
    assert not is_complete(path)
    assert path.stat().st_size >= w._file.tell()  # every chunk is in the file (+ zero padding)
    with open(path, 'r+b') as f:
        f.truncate(w._file.tell() - 50)  # a torn last chunk
    before = path.read_bytes()
    report = recover_bag(bag, force=True)
    assert report.repaired == [path.name] and report.messages[path.name] == 9
    assert report.out == tmp_path / 'bag_recovered' and is_complete(report.out / path.name)
    assert path.read_bytes() == before and not (bag / 'metadata.yaml').exists()  # original untouched
    got = [d for _, d in read_rosbags([report.out])]
    assert got == sent[:9]
    assert [d for _, d in read_mcap(report.out / path.name)] == sent[:9]


def test_recover_stops_at_any_cut(tmp_path):
    bag = tmp_path / 'bag'
    w = BagWriter(bag, chunk_size_bytes=100)
    w.add_topic('/t', IMAGE)
    for i in range(5):
        w.write('/t', image_cdr(i), 1000 + i)
    full = w.current_path.read_bytes()  # ends with the zero padding of the last 4 KiB block
    for cut in range(8, len(full), 397):  # never more messages than complete chunks, never a crash
        d = tmp_path / f'cut{cut}'
        d.mkdir()
        (d / 'cut_0.mcap').write_bytes(full[:cut])
        report = recover_bag(d, force=True)
        assert report.messages['cut_0.mcap'] <= 5
        assert len(read_mcap(report.out / 'cut_0.mcap')) == report.messages['cut_0.mcap']


Usage = namedtuple('Usage', 'total used free')


def test_recorder_counts_drops_and_pauses(tmp_path):
    gate = threading.Event()
    rec = Recorder(tmp_path / 'bag', queue_max_bytes=3000, min_free_disk_bytes=0)
    real_write = rec._sink.writer.write
    rec._sink.writer.write = lambda *a: (gate.wait(), real_write(*a))
    rec.add_topic('/t', IMAGE)
    results = [rec.put('/t', image_cdr(i), 1000 + i) for i in range(10)]  # 1.2 kB each, writer blocked
    assert results.count(False) >= 7
    rec.pause()
    assert rec.put('/t', image_cdr(99), 5000) is False
    gate.set()
    rec.resume()
    assert rec.stop(timeout=10)
    c = rec.snapshot()['/t']
    assert c.received == 11 and c.skipped == 1 and c.written + c.dropped == 10
    assert c.written == len(read_rosbags([tmp_path / 'bag']))


def test_recorder_split_and_disk_threshold(tmp_path):
    free = [10 << 30]
    errors = []
    clock = FakeClock()
    rec = Recorder(tmp_path / 'bag', min_free_disk_bytes=1 << 30,
                   disk_usage=lambda p: Usage(0, 0, free[0]), on_error=errors.append, clock=clock)
    rec.add_topic('/t', IMAGE)
    rec.put('/t', image_cdr(0), 1000)
    rec.split()
    rec.put('/t', image_cdr(1), 2000)
    wait_until(lambda: rec.snapshot()['/t'].written == 2, what='two messages written')
    free[0] = 1 << 20  # the disk is nearly full now
    clock.advance(sink._DISK_CHECK_PERIOD_S)  # the next write re-reads the free space
    rec.put('/t', image_cdr(2), 3000)
    rec._thread.join(30)
    assert rec.state == 'error' and errors and 'min_free_disk_bytes' in errors[0]
    assert len(rec.files) == 2 and all(is_complete(p) for p in rec.files)
    assert len(read_rosbags([tmp_path / 'bag'])) == 2
    assert rec.put('/t', image_cdr(3), 4000) is False  # refused, and counted
    assert rec.snapshot()['/t'].dropped == 2


def test_free_space_is_reread_per_check_period_of_the_clock(tmp_path):
    """statvfs at most once per check period, and other programs' rate measured over the clock's time."""
    from vidseg_ros.data.recorder.disk_space import DiskSpace
    free, reads, clock = [100 << 20], [], FakeClock()
    space = DiskSpace(tmp_path, disk_usage=lambda p: reads.append(p) or Usage(0, 0, free[0]), check_period_s=0.5,
                      clock=clock)
    free[0] = 50 << 20                        # another program takes 50 MiB
    assert space.estimate() == 100 << 20 and len(reads) == 1
    clock.advance(0.4)
    assert space.estimate() == 100 << 20 and len(reads) == 1
    clock.advance(0.1)
    assert space.estimate() == 50 << 20 and len(reads) == 2
    assert space.foreign_rate == pytest.approx((50 << 20) / 0.5)      # bytes per second of the clock
    assert space.margin == int(2 * space.foreign_rate * 0.5)


def test_recorder_refuses_to_start_on_full_disk(tmp_path):
    with pytest.raises(OSError, match='min_free_disk_bytes'):
        Recorder(tmp_path / 'bag', min_free_disk_bytes=1 << 30, disk_usage=lambda p: Usage(0, 0, 1))


def test_slow_topic_reaches_disk_within_a_second(tmp_path):
    clock = FakeClock()
    rec = Recorder(tmp_path / 'bag', chunk_size_bytes=64 << 20, min_free_disk_bytes=0, clock=clock)
    rec.add_topic('/info', INFO)
    for i in range(3):
        rec.put('/info', info_cdr(i), 1000 + i)
    wait_until(lambda: rec.snapshot()['/info'].written == 3, what='three messages in the open chunk')
    copies = []

    def recovered_if_killed_now() -> int:
        copy = tmp_path / f'killed{len(copies)}'
        copy.mkdir()
        copies.append(copy)
        (copy / 'killed_0.mcap').write_bytes(rec.files[0].read_bytes())  # as a SIGKILL would leave it
        try:
            return recover_bag(copy, force=True).messages['killed_0.mcap']
        except RecoveryRefused:  # not even the header on disk yet
            return 0
    assert recovered_if_killed_now() == 0  # the small chunk is still open, far from full
    clock.advance(core._CHUNK_MAX_AGE_S)  # one chunk-age period: the writer ends the chunk
    wait_until(lambda: recovered_if_killed_now() == 3, what='the chunk on disk', poll_s=0.1)
    rec.stop()


@pytest.mark.parametrize('direct', [True, False])
def test_append_file_direct_and_buffered(tmp_path, direct):
    from vidseg_ros.data.bags.direct_file import BLOCK, AppendFile
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (5, 4096, 100_000, 3, 70_000, 1)]
    f = AppendFile(tmp_path / 'x.bin', fsync_bytes=50_000, direct=direct, stage_bytes=64 * 1024)
    written = b''
    for part in parts:
        f.write(part)
        written += part
        f.sync_point()  # the file now holds everything, zero-padded to a whole block
        on_disk = (tmp_path / 'x.bin').read_bytes()
        assert on_disk[:len(written)] == written and len(on_disk) % BLOCK == 0
        assert not on_disk[len(written):].strip(b'\0')
    f.close()
    assert (tmp_path / 'x.bin').read_bytes() == written
    with pytest.raises(FileExistsError):
        AppendFile(tmp_path / 'x.bin')


def test_snapshot_ring_bounded_in_seconds_and_bytes(tmp_path):
    rec = Recorder(tmp_path / 'bag', min_free_disk_bytes=0, snapshot_mode=True, snapshot_max_duration_s=1.0,
                   snapshot_max_bytes=30 * len(image_cdr(0)))
    rec.add_topic('/t', IMAGE)
    assert rec.trigger_snapshot() == (None, 'nothing buffered yet') and not (tmp_path / 'bag').exists()
    t0 = 10**18
    sent = [image_cdr(i) for i in range(40)]
    for i, data in enumerate(sent):  # 10 Hz for 4 s: the 1 s window holds 11 messages
        rec.put('/t', data, t0 + i * 10**8)
    path, message = rec.trigger_snapshot()
    assert path == tmp_path / 'bag_snapshot_1' and '11 messages' in message
    for i in range(40, 45):  # 5 more, then a burst past the byte bound: only the newest 30 stay
        rec.put('/t', image_cdr(i), t0 + 39 * 10**8 + i)
    for i in range(45, 100):
        rec.put('/t', image_cdr(i), t0 + 39 * 10**8 + i)
    path2, _ = rec.trigger_snapshot()
    assert rec.stop(timeout=10)
    assert [d for _, d in read_rosbags([path])] == sent[29:40]  # first and last of the window
    got = read_rosbags([path2])
    assert len(got) == 30 and got[-1][1] == image_cdr(99) and got[0][1] == image_cdr(70)
    c = rec.snapshot()['/t']
    assert c.written == 41 and c.expired == 100 - 41 and c.dropped == 0


def test_snapshot_window_after_the_clock_went_back(tmp_path):
    """/clock of a replay restarted 990 s back: the messages from before the jump never expired (a 2 s window
    held them all and the reply said -988 s; with no byte bound the ring grew without end). A step back of
    more than the window starts it afresh; one within it (jitter) keeps the window."""
    from vidseg_ros.data.recorder.snapshot_ring import SnapshotRing
    ring, s = SnapshotRing(max_duration_s=2.0), 10**9
    t0 = 1000 * s
    for i in range(30):                       # 10 Hz for 3 s: the window holds the last 2 s
        ring.add('/t', b'x', t0 + i * s // 10, 0)
    assert len(ring) == 21
    ring.add('/t', b'x', t0 + 29 * s // 10 - s // 20, 0)    # 50 ms back: jitter, nothing leaves
    assert len(ring) == 22
    expired = ring.add('/t', b'y', t0 - 990 * s, 0)           # the jump: only the new timeline is kept
    assert len(ring) == 1 and expired == ['/t'] * 22
    for i in range(1, 30):
        ring.add('/t', b'y', t0 - 990 * s + i * s // 10, 0)
    assert len(ring) == 21 and {m[1] for m in ring.messages} == {b'y'}
    rec = Recorder(tmp_path / 'bag', min_free_disk_bytes=0, snapshot_mode=True, snapshot_max_duration_s=2.0)
    rec.add_topic('/t', IMAGE)
    for i in range(30):
        rec.put('/t', image_cdr(i), t0 + i * s // 10)
    for i in range(30, 40):
        rec.put('/t', image_cdr(i), t0 - 990 * s + (i - 30) * s // 10)
    path, message = rec.trigger_snapshot()
    assert rec.stop(timeout=10)
    assert '10 messages' in message and ' -' not in message, message
    assert [d for _, d in read_rosbags([path])] == [image_cdr(i) for i in range(30, 40)]
