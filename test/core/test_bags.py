"""Bag reading: every storage, and damaged files (truncated, flipped bytes) yield what survives + a warning."""
import shutil
import struct

import numpy as np
import pytest

from vidseg_ros.data.bags.reader import bag_files, deserialize, list_topics, read_messages
from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag


def _frames(n, hw=(120, 160), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for _ in range(n)]


def _bag(tmp_path, storage, n=40, name='bag', compress=False):
    frames = _frames(n)
    cfg = BagFromFramesConfig(storage=storage, camera_info=False, compress=compress, rate_hz=10)
    write_bag(tmp_path / name, [frames], cfg)
    return tmp_path / name, frames


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_read_intact(tmp_path, storage):
    bag, frames = _bag(tmp_path, storage, n=5)
    warnings = []
    msgs = list(read_messages(bag, warnings=warnings))
    assert not warnings and len(msgs) == 5
    assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs)
    img = deserialize(msgs[2])
    assert np.array_equal(np.asarray(img.data).reshape(120, 160, 3), frames[2])
    assert list_topics(bag) == {'/camera/image_raw': ('sensor_msgs/msg/Image', 5)}


def test_topic_and_time_filters(tmp_path):
    bag, _ = _bag(tmp_path, 'mcap', n=6)
    msgs = list(read_messages(bag))
    t0 = msgs[0].log_time_ns
    part = list(read_messages(bag, start_ns=msgs[2].log_time_ns, stop_ns=msgs[4].log_time_ns))
    assert [m.log_time_ns for m in part] == [msgs[2].log_time_ns, msgs[3].log_time_ns]
    assert list(read_messages(bag, topics=['/other'])) == []
    assert t0 > 0



@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_a_bag_copied_from_a_mac_reads_without_its_hidden_files(tmp_path, storage):
    """macOS writes ``._<name>`` beside each file it copies to a USB disk: ``._bag.mcap`` was read as a split
    missing from metadata.yaml, with two warnings (not listed, not an MCAP file)."""
    bag, _ = _bag(tmp_path, storage, n=5)
    for f in bag_files(bag):
        (bag / f'._{f.name}').write_bytes(b'\x00\x05\x16\x07 Mac OS X resource fork')
    warnings = []
    assert len(list(read_messages(bag, warnings=warnings))) == 5 and not warnings, warnings
    assert [f.name for f in bag_files(bag)] == [f'bag.{"mcap" if storage == "mcap" else "db3"}']

def _damage(bag, mutate, name):
    out = bag.parent / name
    shutil.copytree(bag, out)
    f = bag_files(out)[0]
    f.write_bytes(mutate(f.read_bytes()))
    return out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_truncated_bag_yields_prefix_and_warns(tmp_path, storage, caplog):
    bag, frames = _bag(tmp_path, storage, n=200, compress=storage == 'mcap')
    cut = _damage(bag, lambda b: b[:len(b) // 2], 'cut')
    warnings = []
    msgs = list(read_messages(cut, warnings=warnings))
    assert warnings and any('truncated' in w for w in warnings)
    assert 40 <= len(msgs) < 200
    # What survives is the beginning of the recording, intact and in order.
    for i, m in enumerate(msgs):
        assert np.array_equal(np.asarray(deserialize(m).data).reshape(120, 160, 3), frames[i])
    assert 'salvag' in caplog.text


def test_mcap_flipped_chunk_header_skips_only_that_chunk(tmp_path):
    bag, frames = _bag(tmp_path, 'mcap', n=200)
    data = bag_files(bag)[0].read_bytes()
    # Find the second chunk record (opcode 0x06 followed by a plausible length) and wreck its header.
    pos, chunks = 8, []
    while pos < len(data) and data[pos] != 0x0F:
        length = struct.unpack_from('<Q', data, pos + 1)[0]
        if data[pos] == 0x06:
            chunks.append(pos)
        pos += 9 + length
    assert len(chunks) >= 3
    second = chunks[1]
    bad = _damage(bag, lambda b: b[:second] + bytes(x ^ 0xFF for x in b[second:second + 40])
                  + b[second + 40:], 'flipped')
    warnings = []
    msgs = list(read_messages(bad, warnings=warnings))
    assert warnings and any('damaged' in w for w in warnings)
    assert 0 < len(msgs) < 200
    stamps = [m.log_time_ns for m in msgs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # Messages after the damaged chunk are recovered too, not just the prefix.
    full = [m.log_time_ns for m in read_messages(bag)]
    assert stamps[-1] == full[-1]


def test_sqlite_flipped_page_loses_only_some_rows(tmp_path):
    bag, _ = _bag(tmp_path, 'sqlite3', n=60)
    bad = _damage(bag, lambda b: b[:len(b) // 3] + bytes(x ^ 0xFF for x in b[len(b) // 3:len(b) // 3 + 4096])
                  + b[len(b) // 3 + 4096:], 'flipped')
    warnings = []
    msgs = list(read_messages(bad, warnings=warnings))
    assert warnings
    assert 40 <= len(msgs) < 60


def test_missing_bag_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        list(read_messages(tmp_path / 'nope.mcap'))


@pytest.mark.parametrize('compression', ['zstd', 'lz4'])
def test_recorder_bags_split_and_killed(tmp_path, compression):
    """Bags from the recorder's BagWriter (split files, compressed chunks), last file cut short."""
    bag_writer = pytest.importorskip('vidseg_ros.data.bags.writer')
    from vidseg_ros.data.bags.from_frames import TYPESTORE, image_msg
    w = bag_writer.BagWriter(tmp_path / 'rec', compression=compression, chunk_size_bytes=100_000,
                             max_bag_size_bytes=400_000)
    w.add_topic('/cam/image', 'sensor_msgs/msg/Image')
    frames = _frames(40, hw=(60, 80))
    for i, f in enumerate(frames):
        t = 10**18 + i * 10**8
        msgtype, msg = image_msg(f, t, 'cam')
        w.write('/cam/image', bytes(TYPESTORE.serialize_cdr(msg, msgtype)), t)
    w.close()
    files = bag_files(tmp_path / 'rec')
    assert len(files) >= 2 and len(list(read_messages(tmp_path / 'rec'))) == 40
    files[-1].write_bytes(files[-1].read_bytes()[: files[-1].stat().st_size * 2 // 3])
    warnings = []
    msgs = list(read_messages(tmp_path / 'rec', warnings=warnings))
    assert warnings and 25 < len(msgs) < 40
    for i, m in enumerate(msgs):
        assert np.array_equal(np.asarray(deserialize(m).data).reshape(60, 80, 3), frames[i])


def test_a_split_closed_while_the_bag_is_read_is_read_once(tmp_path):
    """The recorder lists a split in metadata.yaml when it closes it. Files metadata.yaml leaves out are read after the
    listed ones: a split closed after the regular reader had read metadata.yaml but before that list was made was
    read by neither (10 of 20 messages)."""
    from support.bags import IMAGE, image_cdr
    from vidseg_ros.data.bags.writer import BagWriter
    w = BagWriter(tmp_path / 'rec', chunk_size_bytes=1 << 12, direct_io=False)
    w.add_topic('/cam', IMAGE)
    for i in range(20):
        w.write('/cam', image_cdr(i), (i + 1) * 10**9)
        w.flush()
        if i == 9:
            w.split()
    messages = read_messages(tmp_path / 'rec', warnings=(warnings := []))
    stamps = [next(messages).log_time_ns]          # the regular reader has read metadata.yaml: rec_0.mcap only
    w.close()                                      # the recorder closes rec_1.mcap and lists it
    stamps += [m.log_time_ns for m in messages]
    assert stamps == [(i + 1) * 10**9 for i in range(20)], stamps
    assert any('rec_1.mcap not listed in its metadata.yaml' in t for t in warnings)
