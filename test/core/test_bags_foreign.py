"""extract on bags written by other recorders than ours (rosbags' writers, the mcap library): every frame, in
order, or one clear error; never a silent empty result."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import CompressionMode
from rosbags.typesys import Stores, get_typestore

from support.bags import IMAGE, TS, rosbag2
from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.data.datasets.layouts import read_index

COMPRESSED = 'sensor_msgs/msg/CompressedImage'
T = TS.types


def _header(ns: int):
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9),
                                    frame_id='cam')


def _frame(i: int, h: int = 8, w: int = 12) -> np.ndarray:
    """An RGB frame of noise whose first pixel says its number (red = i)."""
    rgb = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
    rgb[0, 0] = (i, 0, 0)
    return rgb


def raw_cdr(i: int, ns: int, h: int = 8, w: int = 12) -> bytes:
    return TS.serialize_cdr(T[IMAGE](header=_header(ns), height=h, width=w, encoding='rgb8', is_bigendian=0,
                                     step=w * 3, data=_frame(i, h, w).ravel()), IMAGE)


def compressed_cdr(ns: int, fmt: str, payload: bytes) -> bytes:
    return TS.serialize_cdr(T[COMPRESSED](header=_header(ns), format=fmt, data=np.frombuffer(payload, np.uint8)),
                            COMPRESSED)


def frames_of(out: Path) -> list[int]:
    """The frame numbers of the extracted dataset at ``out``, in index order."""
    return [int(cv2.imread(str(r.image))[0, 0, 2]) for r in read_index(out)]


def test_every_frame_undecodable_is_an_error_not_an_empty_success(tmp_path):
    # a GIF stream (a WebP one before WebP was read): 'not PNG, JPEG, WebP or BMP' for each frame; extract
    # returned 0 written (exit 0) with only warnings
    gif = cv2.imencode('.gif', _frame(1))[1].tobytes()
    bag = rosbag2(tmp_path / 'bag', [((i + 1) * 10**8, compressed_cdr((i + 1) * 10**8, 'gif', gif))
                                     for i in range(5)], msgtype=COMPRESSED)
    with pytest.raises(ValueError, match=r'no frame extracted: all 5 frame\(s\) failed to decode; the first: .*'
                                         r'not PNG, JPEG, WebP or BMP'):
        extract([bag], tmp_path / 'out')
    assert not (tmp_path / 'out' / 'index.csv').exists()


def _raw_bag(path: Path, n: int = 6, h: int = 8, w: int = 12, **kw) -> Path:
    return rosbag2(path, [((i + 1) * 10**8, raw_cdr(i, (i + 1) * 10**8, h, w)) for i in range(n)], **kw)


@pytest.mark.parametrize('plugin', ['mcap', 'sqlite3'])
def test_file_compressed_rosbag2_bags_extract_whole(tmp_path, plugin):
    # `ros2 bag record --compression-mode file`: bag_0.mcap.zstd; refused as "no .mcap or .db3 files"
    bag = _raw_bag(tmp_path / 'bag', plugin=plugin, compression=CompressionMode.FILE)
    assert [p.name.endswith('.zstd') for p in bag.iterdir() if p.name != 'metadata.yaml'] == [True]
    res = extract([bag], tmp_path / 'out')
    assert res.written == 6 and not res.warnings
    assert frames_of(tmp_path / 'out') == list(range(6))
    lone = next(bag.glob('*.zstd'))        # the split alone, without its metadata.yaml
    res = extract([lone], tmp_path / 'lone')
    assert res.written == 6 and frames_of(tmp_path / 'lone') == list(range(6))


def test_a_cut_file_compressed_split_gives_what_it_holds(tmp_path):
    bag = _raw_bag(tmp_path / 'bag', n=40, h=64, w=64, compression=CompressionMode.FILE)    # zstd blocks: 128 kB
    split = next(bag.glob('*.zstd'))
    data = split.read_bytes()
    split.write_bytes(data[:len(data) * 3 // 4])
    res = extract([bag], tmp_path / 'out')
    got = frames_of(tmp_path / 'out')
    assert 0 < res.written == len(got) < 40 and got == list(range(len(got)))
    assert any('cut short' in w for w in res.warnings), res.warnings


def test_a_damaged_message_compressed_mcap_is_salvaged_decompressed(tmp_path):
    # each message a zstd frame: the salvage yielded them compressed, every frame failed to decode
    bag = _raw_bag(tmp_path / 'bag', n=30, compression=CompressionMode.MESSAGE)
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) * 2 // 3])
    res = extract([bag], tmp_path / 'out')
    got = frames_of(tmp_path / 'out')
    assert not res.failed and res.written == len(got) > 0 and got == list(range(len(got)))



ROS1 = get_typestore(Stores.ROS1_NOETIC)


def ros1_cdr(i: int, ns: int) -> bytes:
    T1 = ROS1.types
    header = T1['std_msgs/msg/Header'](seq=i, stamp=T1['builtin_interfaces/msg/Time'](sec=ns // 10**9,
                                                                                      nanosec=ns % 10**9),
                                       frame_id='cam')
    return ROS1.serialize_ros1(T1[IMAGE](header=header, height=8, width=12, encoding='rgb8', is_bigendian=0,
                                         step=36, data=_frame(i).ravel()), IMAGE)


def test_an_mcap_of_the_ros1_profile_extracts_whole(tmp_path):
    # `mcap convert drive.bag drive.mcap`: rosbags reads only the ros2 profile, and the salvage it fell back to
    # took sensor_msgs/Image for no image type: "image topics in this bag: none"
    from mcap.writer import Writer as McapWriter
    path = tmp_path / 'drive.mcap'
    with path.open('wb') as f:
        w = McapWriter(f)
        w.start(profile='ros1', library='test')
        schema = w.register_schema('sensor_msgs/Image', 'ros1msg', ROS1.generate_msgdef(IMAGE, ros_version=1)[0]
                                   .encode())
        channel = w.register_channel('/cam/image', 'ros1', schema)
        for i in (0, 2, 1, 3, 4):       # written out of log-time order: read in it
            w.add_message(channel, (i + 1) * 10**8, ros1_cdr(i, (i + 1) * 10**8), (i + 1) * 10**8)
        w.finish()
    res = extract([path], tmp_path / 'out')
    assert res.written == 5 and not res.warnings, res.warnings
    assert frames_of(tmp_path / 'out') == list(range(5))


def _ros1_bag(path: Path, n: int, compression=None) -> Path:
    from rosbags.rosbag1 import Writer as Ros1Writer
    w = Ros1Writer(path)
    if compression:
        w.set_compression(getattr(Ros1Writer.CompressionFormat, compression.upper()))
    w.open()
    conn = w.add_connection('/cam/image', IMAGE, typestore=ROS1)
    for i in range(n):
        w.write(conn, (i + 1) * 10**8, ros1_cdr(i, (i + 1) * 10**8))
    w.close()
    return path


def _killed_recording(bag: Path, out: Path) -> Path:
    """``bag`` as `rosbag record` leaves it when killed while writing its last chunk: that chunk's sizes still 0
    (rosbag fills them in when it closes a chunk), no index after it, the bag header's index position 0."""
    data = bytearray(bag.read_bytes())
    pos, last = 13, None
    while pos < len(data):
        head = int.from_bytes(data[pos:pos + 4], 'little')
        if b'op=\x05' in data[pos + 4:pos + 4 + head]:
            last = pos
        elif last is not None:      # the index starts after the last chunk
            break
        pos += 8 + head + int.from_bytes(data[pos + 4 + head:pos + 8 + head], 'little')
    head = int.from_bytes(data[last:last + 4], 'little')
    header = data[last + 4:last + 4 + head]
    at = header.index(b'size=') + 5
    header[at:at + 4] = bytes(4)
    data[last + 4:last + 4 + head] = header
    data[last + 4 + head:last + 8 + head] = bytes(4)
    out.write_bytes(bytes(data[:pos]))
    return out


@pytest.mark.parametrize('compression', [None, 'bz2', 'lz4'])
def test_a_ros1_bag_of_a_killed_rosbag_record_gives_its_messages(tmp_path, compression):
    # no index: rosbags refuses it and there was no salvage for ROS 1 ("image topics in this bag: none")
    bag = _ros1_bag(tmp_path / 'whole.bag', 30, compression)
    active = _killed_recording(bag, tmp_path / 'drive.bag.active')
    res = extract([active], tmp_path / 'out')
    assert res.written == 30 and not res.failed
    assert frames_of(tmp_path / 'out') == list(range(30))
    assert {r.sequence for r in read_index(tmp_path / 'out')} == {'drive_cam_image_000'}
    if compression:     # a cut bz2 / lz4 chunk this small holds no whole block: nothing to read
        return
    cut = tmp_path / 'cut.bag'
    cut.write_bytes(bag.read_bytes()[:bag.stat().st_size // 2])
    res = extract([cut], tmp_path / 'cut')
    got = frames_of(tmp_path / 'cut')
    assert 0 < res.written == len(got) < 30 and got == list(range(len(got))) and not res.failed


def _split_bag(path: Path, splits: int, per_split: int, h: int = 8, w: int = 12) -> Path:
    """A rosbag2 folder of ``splits`` file-compressed MCAP splits listed in one metadata.yaml, as
    `ros2 bag record --compression-mode file --max-bag-size ...` leaves it (rosbags writes one split a bag)."""
    import yaml
    path.mkdir()
    files, info = [], None
    for k in range(splits):
        msgs = [((k * per_split + i + 1) * 10**8, raw_cdr(k * per_split + i, (k * per_split + i + 1) * 10**8, h, w))
                for i in range(per_split)]
        part = rosbag2(path.parent / f'part{k}', msgs, compression=CompressionMode.FILE)
        info = yaml.safe_load((part / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        name = f'{path.name}_{k}.mcap.zstd'
        shutil.move(next(part.glob('*.zstd')), path / name)
        shutil.rmtree(part)
        files.append({**info['files'][0], 'path': name})
    info.update(relative_file_paths=[f['path'] for f in files], files=files, message_count=splits * per_split)
    info['topics_with_message_count'][0]['message_count'] = splits * per_split
    (path / 'metadata.yaml').write_text(yaml.safe_dump({'rosbag2_bagfile_information': info}))
    return path


def test_a_file_compressed_bag_is_decompressed_one_split_at_a_time(tmp_path, monkeypatch):
    # rosbags' reader decompressed every split into a temporary folder before the first message (a 552 kB bag of
    # 2000 frames at 320x240: 440 MB), and once more when the progress bar counted the frames
    import tempfile
    from vidseg_ros.data.bags.reader import list_topics, read_messages
    bag = _split_bag(tmp_path / 'drive', splits=4, per_split=10, h=60, w=80)
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    held, numbers = [], []
    for msg in read_messages(bag):
        held.append(sum(f.stat().st_size for f in scratch.rglob('*') if f.is_file()))
        numbers.append(msg.log_time_ns // 10**8 - 1)
    assert numbers == list(range(40))
    split = 10 * (60 * 80 * 3 + 200)        # one split's messages, decompressed
    assert 0 < max(held) < 2 * split, (held, split)
    assert list_topics(bag) == {'/cam/image': (IMAGE, 40)}
    res = extract([bag], tmp_path / 'out')
    assert res.written == 40 and frames_of(tmp_path / 'out') == list(range(40))


def test_a_split_of_still_frames_decompresses_in_small_steps(tmp_path):
    # a lone split (and, by the same code, each split of a folder): a 1 MB read of a compressed split of still
    # frames decompressed to all of it at once (a 2000-frame split: 440 MB, extract's RSS went from 82 to 517 MB)
    import tracemalloc
    from vidseg_ros.data.bags.reader import read_messages
    black = TS.serialize_cdr(T[IMAGE](header=_header(10**8), height=240, width=320, encoding='rgb8', is_bigendian=0,
                                      step=960, data=np.zeros(240 * 960, np.uint8)), IMAGE)
    bag = rosbag2(tmp_path / 'bag', [((i + 1) * 10**8, black) for i in range(100)], compression=CompressionMode.FILE)
    split = next(bag.glob('*.zstd'))
    assert split.stat().st_size < 100_000         # 23 MB of frames
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_messages(split))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100 and peak < 8 * 2**20, peak


def test_a_bag_whose_storage_disagrees_with_its_metadata_loses_no_message(tmp_path):
    # rosbags pairs a storage's connection with metadata.yaml's only when their QoS texts agree: a hand-edited or
    # regenerated metadata.yaml made it yield nothing of that topic, silently (here: "no image messages")
    import sqlite3
    bag = _raw_bag(tmp_path / 'bag', n=8, plugin='sqlite3')
    qos = ('- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 2147483647\n'
           '    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n    nsec: 4294967295\n  liveliness: 1\n'
           '  liveliness_lease_duration:\n    sec: 2147483647\n    nsec: 4294967295\n'
           '  avoid_ros_namespace_conventions: false')
    with sqlite3.connect(next(bag.glob('*.db3'))) as db:
        db.execute('UPDATE topics SET offered_qos_profiles = ?', (qos,))
    res = extract([bag], tmp_path / 'out')
    assert res.written == 8 and frames_of(tmp_path / 'out') == list(range(8))
    assert any('fewer messages than the bag lists (/cam/image: 0 of 8)' in w for w in res.warnings), res.warnings


def test_the_rows_of_many_bags_are_found_once_not_bags_times_rows(tmp_path, monkeypatch):
    # each bag looked for its rows among all the dataset's, resolving every row's bag path anew: 800 bags of 3
    # frames spent 60 s in realpath (extract: 12.5 s of CPU, 19 s re-run; now 5.7 and 5.5), growing as bags x rows
    from support.bags import mono8_bag
    from vidseg_ros.data.datasets import extract as extract_module, sequence_names
    bags = [mono8_bag(tmp_path / f'b{k:02d}', ['/cam/image'], frames=2) for k in range(30)]
    assert extract(bags, tmp_path / 'out').written == 60
    calls = []
    real = sequence_names.bag_key
    for module in (extract_module, sequence_names):     # every caller of bag_key
        monkeypatch.setattr(module, 'bag_key', lambda bag: calls.append(bag) or real(bag))
    again = extract(bags, tmp_path / 'out')
    assert again.skipped_existing == 60 and again.written == 0
    assert len(calls) <= 5 * len(bags), len(calls)       # a few per bag (there were 1980 here)


def test_messages_still_in_a_sqlite_write_ahead_log_are_read(tmp_path):
    # rosbag2's 'resilient' preset writes through a WAL; a recording killed before the log was checkpointed has its
    # last messages only in bag_0.db3-wal, which rosbags (opening the database immutable) did not read: 6 of 12
    import sqlite3
    bag = _raw_bag(tmp_path / 'bag', n=6, plugin='sqlite3')
    db = next(bag.glob('*.db3'))
    killed = tmp_path / 'killed'
    killed.mkdir()
    con = sqlite3.connect(db)
    try:
        con.execute('PRAGMA journal_mode=WAL')
        con.execute('PRAGMA wal_autocheckpoint=0')
        con.executemany('INSERT INTO messages (topic_id, timestamp, data) VALUES (1, ?, ?)',
                        [((i + 1) * 10**8, raw_cdr(i, (i + 1) * 10**8)) for i in range(6, 12)])
        con.commit()
        for suffix in ('', '-wal', '-shm'):     # the files as the kill left them: the log not checkpointed
            shutil.copy(f'{db}{suffix}', killed / f'{db.name}{suffix}')
    finally:
        con.close()
    shutil.copy(bag / 'metadata.yaml', killed)
    res = extract([killed], tmp_path / 'out')
    assert res.written == 12 and frames_of(tmp_path / 'out') == list(range(12))
    assert any('-wal holds messages not yet in the database' in w for w in res.warnings), res.warnings
