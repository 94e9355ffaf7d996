"""frames -> bag -> extract round trips (pixel-identical, counts, order), splitting, resume, damage."""
import hashlib
import shutil

import numpy as np
import pytest
from support.videos import mjpg_avi

from vidseg_ros.data.bags.reader import bag_files
from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, frames_to_bag, write_bag
from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.datasets.layouts import EXTRACTING_NAME, read_index, read_meta


def _copy(files, dst):
    dst.mkdir(parents=True)
    for f in files:
        shutil.copy(f, dst / f.name)


def _check_roundtrip(src_seqs, out, expect_frames):
    recs = read_index(out)
    assert len(recs) == sum(len(v) for v in expect_frames.values())
    seqs = sorted({r.sequence for r in recs})
    assert len(seqs) == len(src_seqs)
    for seq, name in zip(seqs, src_seqs):
        got = [r for r in recs if r.sequence == seq]
        assert [r.index for r in got] == list(range(len(got)))
        assert [r.stamp_ns for r in got] == sorted(r.stamp_ns for r in got)
        for r, f in zip(got, expect_frames[name]):
            assert np.array_equal(read_rgb(r.image), read_rgb(f)), f


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_davis_roundtrip(tmp_path, davis_dir, storage):
    root = davis_dir / 'JPEGImages' / '480p'
    src = {s: sorted((root / s).glob('*.jpg'))[:3] for s in ('blackswan', 'dog')}
    for s, files in src.items():
        _copy(files, tmp_path / 'src' / s)
    summary = frames_to_bag(tmp_path / 'src', tmp_path / 'bag', BagFromFramesConfig(storage=storage))
    assert summary['frames'] == 6 and summary['sequences'] == ['blackswan', 'dog']
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(workers=2))
    assert res.written == 6 and not res.failed and not res.warnings
    _check_roundtrip(['blackswan', 'dog'], tmp_path / 'out', src)
    assert read_meta(tmp_path / 'out')['fps'] == pytest.approx(15.0, rel=1e-3)


def test_camvid_roundtrip_bgr_and_resume(tmp_path, camvid_dir):
    files = sorted((camvid_dir / 'val').glob('*.webp'))[:4]
    frames_to_bag(files, tmp_path / 'bag', BagFromFramesConfig(encoding='bgr8', rate_hz=15))
    res = extract([tmp_path / 'bag'], tmp_path / 'out')
    assert res.written == 4
    _check_roundtrip(['files'], tmp_path / 'out', {'files': files})
    again = extract([tmp_path / 'bag'], tmp_path / 'out')
    assert again.written == 0 and again.skipped_existing == 4
    assert len(read_index(tmp_path / 'out')) == 4


def test_compressed_keep_and_png(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    write_bag(tmp_path / 'bag', [frames], BagFromFramesConfig(encoding='png'))
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(image_format='keep'))
    recs = read_index(tmp_path / 'out')
    assert res.written == 3 and recs[0].topic == '/camera/image_raw/compressed'
    assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(recs, frames))
    assert 'png' in recs[0].encoding



@pytest.mark.parametrize('encoding', ['png', 'jpeg'])
def test_a_kept_frame_is_deserialised_once_and_written_as_recorded(tmp_path, monkeypatch, encoding):
    """--image-format keep deserialised each kept frame 5 times in the main process (its size, whether it is kept,
    its suffix, again whether it is kept, its bytes: 11 us each for a 640x480 JPEG): the planner's one
    deserialisation now goes with the frame to its file. The files are the recorded bytes."""
    from vidseg_ros.data.bags import reader
    from vidseg_ros.data.bags.reader import read_messages
    from vidseg_ros.data.datasets import extract as extract_module, frame_files, image_messages, sequence_planner
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(4)]
    write_bag(tmp_path / 'bag', [frames], BagFromFramesConfig(encoding=encoding))
    sent = [bytes(reader.deserialize(m).data) for m in read_messages(tmp_path / 'bag')
            if m.msgtype.endswith('CompressedImage')]
    calls, real = [], reader.deserialize
    for module in (reader, extract_module, frame_files, image_messages, sequence_planner):
        if getattr(module, 'deserialize', None) is real:
            monkeypatch.setattr(module, 'deserialize', lambda msg: calls.append(msg) or real(msg))
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(image_format='keep'))
    assert res.written == 4 and not res.failed
    assert len(calls) == 4
    recs = read_index(tmp_path / 'out')
    assert [r.image.read_bytes() for r in recs] == sent
    assert {r.image.suffix for r in recs} == {'.png' if encoding == 'png' else '.jpg'}


def test_gap_split_every_and_time_range(tmp_path):
    rng = np.random.default_rng(1)
    seqs = [[rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(6)] for _ in range(2)]
    write_bag(tmp_path / 'bag', seqs, BagFromFramesConfig(rate_hz=10, gap_s=1.0, encoding='mono8'))
    res = extract([tmp_path / 'bag'], tmp_path / 'a', ExtractConfig(every=2))
    recs = read_index(tmp_path / 'a')
    assert len(res.sequences) == 2 and [r.index for r in recs[:3]] == [0, 2, 4]
    assert recs[0].encoding == 'mono8'
    res = extract([tmp_path / 'bag'], tmp_path / 'b', ExtractConfig(start_s=0.15, stop_s=0.45))
    assert [r.index for r in read_index(tmp_path / 'b')] == [0, 1, 2]   # frames at 0.2, 0.3, 0.4 s


def test_truncated_bag_extracts_prefix_with_warning(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(150)]
    write_bag(tmp_path / 'bag', [frames], BagFromFramesConfig(camera_info=False))
    f = bag_files(tmp_path / 'bag')[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
    res = extract([tmp_path / 'bag'], tmp_path / 'out')
    assert res.warnings and 50 < res.written < 150 and not res.failed
    recs = read_index(tmp_path / 'out')
    assert all(np.array_equal(read_rgb(r.image), frames[i]) for i, r in enumerate(recs))


def test_commands_roundtrip_with_progress(tmp_path):
    from vidseg_ros.tools import commands_data
    rng = np.random.default_rng(3)
    (tmp_path / 'src').mkdir()
    import cv2
    for i in range(3):
        cv2.imwrite(str(tmp_path / 'src' / f'{i:03d}.png'), rng.integers(0, 255, (16, 24, 3), dtype=np.uint8))
    s = commands_data.bag_from_frames(tmp_path / 'src', tmp_path / 'bag', rate_hz=5, storage='sqlite3')
    assert s['frames'] == 3 and 'stamps' not in s
    r = commands_data.extract([tmp_path / 'bag'], tmp_path / 'out', workers=2, progress=True)
    assert r['written'] == 3 and r['failed'] == 0 and r['frames_per_s'] > 0
    with pytest.raises(Exception, match='image_format'):
        commands_data.extract([tmp_path / 'bag'], tmp_path / 'x', image_format='gif', progress=False)


def test_ros1_bag_extracts_with_header_stamps(tmp_path):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS1_NOETIC)
    img_t, hdr_t, time_t = (ts.types[k] for k in ('sensor_msgs/msg/Image', 'std_msgs/msg/Header',
                                                  'builtin_interfaces/msg/Time'))
    frames = [np.random.default_rng(i).integers(0, 255, (8, 10, 3), dtype=np.uint8) for i in range(3)]
    with Writer(tmp_path / 'x.bag') as w:
        conn = w.add_connection('/cam/image', img_t.__msgtype__, typestore=ts)
        for i, f in enumerate(frames):
            msg = img_t(header=hdr_t(seq=i, stamp=time_t(sec=100 + i, nanosec=5), frame_id='c'), height=8,
                        width=10, encoding='rgb8', is_bigendian=0, step=30, data=f.reshape(-1))
            w.write(conn, (200 + i) * 10**9, ts.serialize_ros1(msg, img_t.__msgtype__))
    res = extract([tmp_path / 'x.bag'], tmp_path / 'out', ExtractConfig(max_gap_s=2.0))
    recs = read_index(tmp_path / 'out')
    assert res.written == 3 and [r.stamp_ns for r in recs] == [(100 + i) * 10**9 + 5 for i in range(3)]
    assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(recs, frames))


def test_video_to_bag(tmp_path):
    mjpg_avi(tmp_path / 'v.avi', 4, hw=(24, 32), fps=10, step=40)
    s = frames_to_bag(tmp_path / 'v.avi', tmp_path / 'bag', BagFromFramesConfig(rate_hz=10))
    assert s['frames'] == 4 and s['sequences'] == ['v']
    assert extract([tmp_path / 'bag'], tmp_path / 'out').written == 4


def test_camvid_flat_folder_splits_by_sequence_prefix(tmp_path, camvid_dir):
    files = sorted((camvid_dir / 'train').glob('0001TP_*.webp'))[:2] + \
        sorted((camvid_dir / 'train').glob('0006R0_*.webp'))[:2]
    _copy(files, tmp_path / 'flat')
    s = frames_to_bag(tmp_path / 'flat', tmp_path / 'bag', BagFromFramesConfig(camera_info=False))
    assert s['sequences'] == ['0001TP', '0006R0'] and s['frames'] == 4
    res = extract([tmp_path / 'bag'], tmp_path / 'out')
    assert len(res.sequences) == 2
    _check_roundtrip(['0001TP', '0006R0'], tmp_path / 'out',
                     {'0001TP': files[:2], '0006R0': files[2:]})


def test_wrong_topic_is_an_error_naming_the_available_ones(tmp_path):
    write_bag(tmp_path / 'bag', [[np.zeros((8, 8, 3), np.uint8)]], BagFromFramesConfig(topic='/cam/image'))
    with pytest.raises(ValueError, match='image topics in this bag: /cam/image'):
        extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(topics=['/camera/image_raw']))


def test_a_video_given_as_a_bag_is_refused_before_any_work(tmp_path):
    (tmp_path / 'drive.mp4').write_bytes(b'not a bag')
    with pytest.raises(ValueError, match='is not a bag'):
        extract([tmp_path / 'drive.mp4'], tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_segment_node_outputs_are_not_taken_for_camera_frames(tmp_path):
    """A drive recorded with the segmenter's masks (as `make demo` records it): extracting "every image
    topic" used to turn the mono8 class-id masks into a second training video."""
    from vidseg_ros.tools import commands_data
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 255, (16, 24, 3), dtype=np.uint8) for _ in range(3)]
    write_bag(tmp_path / 'camera', [frames])
    write_bag(tmp_path / 'masks', [[f % 11 for f in frames]],
              BagFromFramesConfig(topic='/vidseg_segmenter/mask', encoding='mono8'))
    write_bag(tmp_path / 'overlay', [frames], BagFromFramesConfig(topic='/robot/vidseg_segmenter/overlay'))
    bags = [tmp_path / 'camera', tmp_path / 'masks', tmp_path / 'overlay']
    r = commands_data.extract(bags, tmp_path / 'all', progress=True)
    assert {rec.topic for rec in read_index(tmp_path / 'all')} == {'/camera/image_raw'}
    assert r['written'] == 3 and r['left_out'] == ['/robot/vidseg_segmenter/overlay', '/vidseg_segmenter/mask']
    # named, an output is extracted like any topic
    res = extract(bags, tmp_path / 'masks_only', ExtractConfig(topics=['/vidseg_segmenter/mask']))
    assert res.written == 3 and not res.skipped_topics
    # a bag of outputs only: the error says why nothing was taken and how to take it
    with pytest.raises(ValueError, match=r'segment_node outputs, left out unless named with --topic'):
        extract([tmp_path / 'masks'], tmp_path / 'none')


def _noise(n, seed, hw=(16, 24)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize('second_start_ns', [None, 1_700_000_100_000_000_000])
def test_bags_with_the_same_name_keep_their_own_sequences_and_resume(tmp_path, second_start_ns):
    """Two days' `drive` bags: with the same stamps the second day's frames were skipped as "existing"
    (lost); with other stamps both days were merged into one sequence with every index twice."""
    days = {'day1': _noise(4, 10), 'day2': _noise(4, 11)}
    write_bag(tmp_path / 'day1' / 'drive', [days['day1']])
    cfg2 = BagFromFramesConfig(**({'start_ns': second_start_ns} if second_start_ns else {}))
    write_bag(tmp_path / 'day2' / 'drive', [days['day2']], cfg2)
    bags = [tmp_path / 'day1' / 'drive', tmp_path / 'day2' / 'drive']
    res = extract(bags, tmp_path / 'out')
    assert res.written == 8 and not res.skipped_existing and len(res.sequences) == 2
    recs = read_index(tmp_path / 'out')
    assert {r.sequence for r in recs if r.bag == str(bags[0])} == {'drive_camera_image_raw_000'}
    for bag, day in zip(bags, days):    # each bag: its own sequence, indices 0..3, its own pixels
        mine = sorted((r for r in recs if r.bag == str(bag)), key=lambda r: r.index)
        assert len({r.sequence for r in mine}) == 1 and [r.index for r in mine] == [0, 1, 2, 3]
        assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(mine, days[day]))
    # re-runs resume whatever the order or subset of the bags
    again = extract(bags[::-1], tmp_path / 'out')
    assert again.written == 0 and again.skipped_existing == 8
    assert extract(bags[1:], tmp_path / 'out').skipped_existing == 4
    assert len(read_index(tmp_path / 'out')) == 8


def test_a_run_without_frames_leaves_no_fps_and_a_bad_fps_is_estimated_again(tmp_path):
    write_bag(tmp_path / 'bag', [_noise(3, 12)], BagFromFramesConfig(rate_hz=10))
    with pytest.raises(ValueError, match='no image messages on /nope'):
        extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(topics=['/nope']))
    # the failed run used to leave fps: 0.0 (kept forever), and an empty index that made the folder a dataset
    assert not (tmp_path / 'out').exists()
    (tmp_path / 'mine').mkdir()
    with pytest.raises(ValueError, match='no image messages on /nope'):
        extract([tmp_path / 'bag'], tmp_path / 'mine', ExtractConfig(topics=['/nope']))
    assert (tmp_path / 'mine').is_dir() and not list((tmp_path / 'mine').iterdir())   # the user's folder stays
    extract([tmp_path / 'bag'], tmp_path / 'out')
    assert read_meta(tmp_path / 'out')['fps'] == pytest.approx(10.0)
    (tmp_path / 'out' / 'dataset.yaml').write_text('classes: [a, b]\nfps: 0.0\n')   # an old dataset
    extract([tmp_path / 'bag'], tmp_path / 'out')
    assert read_meta(tmp_path / 'out') == {'classes': ['a', 'b'], 'fps': pytest.approx(10.0)}


def test_a_time_range_beyond_the_bag_is_an_error_and_a_warning_per_bag(tmp_path):
    write_bag(tmp_path / 'short', [_noise(3, 13)], BagFromFramesConfig(rate_hz=10))
    write_bag(tmp_path / 'long', [_noise(30, 14)], BagFromFramesConfig(rate_hz=10))
    with pytest.raises(ValueError, match=r'short: no frame from 100 s after the first .*span 0.20 s'):
        extract([tmp_path / 'short'], tmp_path / 'a', ExtractConfig(start_s=100))
    assert not (tmp_path / 'a').exists()
    res = extract([tmp_path / 'short', tmp_path / 'long'], tmp_path / 'b', ExtractConfig(start_s=1.0))
    assert res.written == 20 and res.warnings == [f'{tmp_path / "short"}: no frame from 1 s after the first '
                                                  '(--start-s/--stop-s); its image topics span 0.20 s']


def test_a_full_disk_leaves_no_temporary_file_and_names_the_frame(tmp_path):
    import errno
    import resource
    write_bag(tmp_path / 'bag', [_noise(6, 15, (120, 160))])     # noise PNGs of ~57 kB each
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))    # `ulimit -f`; workers inherit it
    try:
        with pytest.raises(OSError) as err:
            extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(workers=2))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    e = err.value
    assert e.errno == errno.EFBIG and 'free some space' in e.strerror and 'resumes' in e.strerror
    assert str(tmp_path / 'out' / 'images') in e.filename and e.filename.endswith('.png')
    assert not [p for p in (tmp_path / 'out').rglob('*') if p.name.endswith('.tmp')]
    assert extract([tmp_path / 'bag'], tmp_path / 'out').frames == 6


def test_a_damaged_bag_is_read_once_and_each_problem_warned_once(tmp_path, caplog, monkeypatch):
    """The progress bar's count salvaged a damaged bag before extract read it (and the no-image message
    read it a third time): every warning came out two or three times."""
    from vidseg_ros.data.bags import reader
    from vidseg_ros.tools import commands_data
    write_bag(tmp_path / 'bag', [_noise(40, 16, (120, 160))], BagFromFramesConfig(camera_info=False))
    f = bag_files(tmp_path / 'bag')[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
    salvage, salvaged = reader._salvage, []

    def counted(file, warnings):
        salvaged.append(file)
        yield from salvage(file, warnings)
    monkeypatch.setattr(reader, '_salvage', counted)
    for topics, out in (([], 'out'), (['/nope'], 'x')):
        caplog.clear()
        salvaged.clear()
        if topics:
            with pytest.raises(ValueError, match='no image messages on /nope; image topics in this bag: /camera/'):
                commands_data.extract([tmp_path / 'bag'], tmp_path / out, progress=True, topics=topics)
        else:
            assert commands_data.extract([tmp_path / 'bag'], tmp_path / out, progress=True)['written'] > 10
        warned = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
        assert len(salvaged) == 1 and 'regular reader failed' in warned[0]
        assert len(warned) == len(set(warned)), warned
    assert reader.list_topics(tmp_path / 'bag', salvage=False) is None     # the cheap look the count uses


def _write_items(out, items, ros1=False):
    """A bag of (topic, stamp_ns, rgb or (format, bytes)) image messages, in that order."""
    from rosbags.rosbag2 import Writer
    from vidseg_ros.data.bags.from_frames import COMPRESSED_T, TYPESTORE, image_msg
    conns = {}
    with Writer(out, version=9) as w:
        for topic, stamp, frame in items:
            if isinstance(frame, tuple):    # CompressedImage bytes as given
                msgtype, msg = image_msg(np.zeros((2, 2, 3), np.uint8), stamp, 'cam', 'png')
                msg = TYPESTORE.types[COMPRESSED_T](header=msg.header, format=frame[0],
                                                     data=np.frombuffer(frame[1], np.uint8))
            else:
                msgtype, msg = image_msg(frame, stamp, 'cam')
            if (topic, msgtype) not in conns:
                conns[topic, msgtype] = w.add_connection(topic, msgtype, typestore=TYPESTORE)
            w.write(conns[topic, msgtype], stamp, TYPESTORE.serialize_cdr(msg, msgtype))


S, P = 1_700_000_000_000_000_000, 100_000_000


@pytest.mark.parametrize('offset_ns', [0, P // 2])
def test_topics_whose_names_differ_only_in_punctuation_keep_their_own_sequences(tmp_path, offset_ns):
    """/cam/a_b and /cam_a/b both slug to cam_a_b: with the same stamps the second topic's frames were
    skipped as "existing" (lost), with others both cameras alternated in one sequence, indices twice."""
    frames = {'/cam/a_b': _noise(5, 1), '/cam_a/b': _noise(5, 2)}
    items = [(t, S + P * i + (offset_ns if t == '/cam_a/b' else 0), frames[t][i]) for i in range(5) for t in frames]
    _write_items(tmp_path / 'slug', items)
    res = extract([tmp_path / 'slug'], tmp_path / 'out')
    assert res.written == 10 and not res.skipped_existing
    recs = read_index(tmp_path / 'out')
    names = {t: {r.sequence for r in recs if r.topic == t} for t in frames}
    hashed = f'slug_cam_a_b-{hashlib.sha1(b"/cam_a/b").hexdigest()[:8]}_000'
    assert names == {'/cam/a_b': {'slug_cam_a_b_000'}, '/cam_a/b': {hashed}}   # the first by name keeps it
    for topic, mine in frames.items():
        got = [r for r in recs if r.topic == topic]
        assert [r.index for r in got] == list(range(5))
        assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(got, mine))
    again = extract([tmp_path / 'slug'], tmp_path / 'out')
    assert again.written == 0 and again.skipped_existing == 10 and len(read_index(tmp_path / 'out')) == 10
    # the name does not depend on --topic: one topic alone gets the name it gets beside the other
    alone = extract([tmp_path / 'slug'], tmp_path / 'alone', ExtractConfig(topics=['/cam_a/b']))
    assert set(alone.sequences) == {hashed}
    both = extract([tmp_path / 'slug'], tmp_path / 'alone')
    assert both.skipped_existing == 5 and both.written == 5 and set(both.sequences) == set(res.sequences)


def test_a_topic_keeps_the_sequence_name_it_has_in_the_dataset(tmp_path):
    """A dataset whose /cam_a/b frames hold the plain name (made with --topic /cam_a/b by an older
    version): a run over every topic resumes them there and names /cam/a_b apart."""
    frames = {'/cam/a_b': _noise(3, 1), '/cam_a/b': _noise(3, 2)}
    _write_items(tmp_path / 'slug', [(t, S + P * i, frames[t][i]) for i in range(3) for t in frames])
    extract([tmp_path / 'slug'], tmp_path / 'out', ExtractConfig(topics=['/cam_a/b']))
    (seq,) = {r.sequence for r in read_index(tmp_path / 'out')}
    (tmp_path / 'out' / 'images' / seq).rename(tmp_path / 'out' / 'images' / 'slug_cam_a_b_000')
    index = tmp_path / 'out' / 'index.csv'
    index.write_text(index.read_text().replace(seq, 'slug_cam_a_b_000'))
    res = extract([tmp_path / 'slug'], tmp_path / 'out')
    assert res.skipped_existing == 3 and res.written == 3
    recs = read_index(tmp_path / 'out')
    assert {r.sequence for r in recs if r.topic == '/cam_a/b'} == {'slug_cam_a_b_000'}
    assert {r.sequence for r in recs if r.topic == '/cam/a_b'} == \
        {f'slug_cam_a_b-{hashlib.sha1(b"/cam/a_b").hexdigest()[:8]}_000'}
    for topic, mine in frames.items():
        got = [r for r in recs if r.topic == topic]
        assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(got, mine))


@pytest.mark.parametrize('encoding', ['rgb8', 'jpeg', 'png'])
def test_a_frame_size_change_starts_a_new_sequence(tmp_path, encoding):
    """Flow, propagation and the temporal metrics pair neighbouring frames: a sequence is a run of
    same-size frames (a size change mid-topic made propagate fail inside OpenCV)."""
    small, large = _noise(3, 1, (40, 60)), _noise(3, 2, (48, 64))
    write_bag(tmp_path / 'bag', [small + large + small[:1]], BagFromFramesConfig(encoding=encoding))
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(workers=2))
    assert res.written == 7 and not res.failed
    recs = read_index(tmp_path / 'out')
    seqs = sorted({r.sequence for r in recs})
    assert seqs == [f'bag_camera_image_raw{"/compressed" if encoding != "rgb8" else ""}_{i:03d}'.replace('/', '_')
                    for i in range(3)]
    for seq, n, hw in zip(seqs, (3, 3, 1), ((40, 60), (48, 64), (40, 60))):
        got = [r for r in recs if r.sequence == seq]
        assert [r.index for r in got] == list(range(n))
        assert all(read_rgb(r.image).shape[:2] == hw for r in got)
    assert extract([tmp_path / 'bag'], tmp_path / 'out').skipped_existing == 7


def test_frame_size_is_read_from_the_message_bytes():
    from rosbags.typesys import Stores, get_typestore
    from vidseg_ros.data.bags.from_frames import TYPESTORE, image_msg
    from vidseg_ros.data.bags.reader import RawMessage
    from vidseg_ros.data.datasets.extract import frame_hw
    from vidseg_ros.data.images import encode_compressed
    ros1 = get_typestore(Stores.ROS1_NOETIC)
    header = ros1.types['std_msgs/msg/Header']
    stamp = ros1.types['builtin_interfaces/msg/Time'](sec=1, nanosec=2)
    rgb = np.zeros((17, 23, 3), np.uint8)
    for frame_id in ('', 'c', 'cam', 'camera_link'):       # the fields after it sit at every alignment
        for encoding in ('rgb8', 'mono8', 'jpeg', 'png'):
            msgtype, msg = image_msg(rgb, S, frame_id, encoding)
            for little in (True, False):
                raw = bytes(TYPESTORE.serialize_cdr(msg, msgtype, little_endian=little))
                assert frame_hw(RawMessage('b', '/c', msgtype, 0, raw, 'cdr')) == (17, 23), (frame_id, encoding)
            hdr = header(seq=3, stamp=stamp, frame_id=frame_id)
            if encoding in ('jpeg', 'png'):
                fmt, data = encode_compressed(rgb, encoding)
                msg = ros1.types[msgtype](header=hdr, format=fmt, data=np.frombuffer(data, np.uint8))
            else:
                msg = ros1.types[msgtype](header=hdr, height=17, width=23, encoding='rgb8', is_bigendian=0,
                                          step=69, data=rgb.reshape(-1))
            raw = bytes(ros1.serialize_ros1(msg, msgtype))
            assert frame_hw(RawMessage('b', '/c', msgtype, 0, raw, 'ros1')) == (17, 23), (frame_id, encoding)
    # bytes that do not say: unknown, and the frame stays in its sequence (decoding then judges it)
    cut = bytes(TYPESTORE.serialize_cdr(*image_msg(rgb, S, 'cam', 'jpeg')[::-1]))[:40]
    assert frame_hw(RawMessage('b', '/c', 'sensor_msgs/msg/CompressedImage', 0, cut, 'cdr')) is None
    assert frame_hw(RawMessage('b', '/c', 'sensor_msgs/msg/Image', 0, b'\0\1\0\0' + b'\xff' * 12, 'cdr')) is None


def test_frames_numbered_without_zero_padding_keep_their_order(tmp_path):
    """frame_0 ... frame_11 went 0, 1, 10, 11, 2, ... into the bag, stamped as if consecutive."""
    import cv2
    from vidseg_ros.data.bags.from_frames import find_sequences
    frames = _noise(12, 5, (8, 10))
    for folder in ('src', 'flat', *(f'nested/seq{n}' for n in (10, 2, 1))):
        (tmp_path / folder).mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / 'src' / f'frame_{i}.png'), f[..., ::-1])
    frames_to_bag(tmp_path / 'src', tmp_path / 'bag')
    extract([tmp_path / 'bag'], tmp_path / 'out')
    recs = read_index(tmp_path / 'out')
    assert [r.index for r in recs] == list(range(12))
    assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(recs, frames))
    # sequence folders, and the CamVid-style prefixes of a flat folder, go in number order too
    for n in (10, 2, 1):
        cv2.imwrite(str(tmp_path / 'nested' / f'seq{n}' / 'f_0.png'), frames[0])
        for i in (10, 9):
            cv2.imwrite(str(tmp_path / 'flat' / f'seq{n}_{i}.png'), frames[i][..., ::-1])
    assert [name for name, _ in find_sequences(tmp_path / 'nested')] == ['seq1', 'seq2', 'seq10']
    flat = find_sequences(tmp_path / 'flat')
    assert [name for name, _ in flat] == ['seq1', 'seq2', 'seq10']
    assert all(np.array_equal(f, want) for f, want in zip(flat[0][1], frames[9:11]))


def test_long_bag_names_give_shortened_sequence_names_that_resume(tmp_path):
    """A 250-character bag name made images/<name>_camera_image_raw_000 over 255 bytes: 'File name too long'.
    Shortened names stay apart (two bags of that name, two topics) and re-runs in any order resume them."""
    long = 'x' * 250
    days = {'day1': _noise(4, 10), 'day2': _noise(4, 11)}
    write_bag(tmp_path / 'day1' / long, [days['day1']])
    write_bag(tmp_path / 'day2' / long, [days['day2']], BagFromFramesConfig(start_ns=1_700_000_100_000_000_000))
    bags = [tmp_path / 'day1' / long, tmp_path / 'day2' / long]
    res = extract(bags, tmp_path / 'out')
    from vidseg_ros.data.datasets.sequence_names import MAX_SEQUENCE_BYTES, sequence_name as _sequence_name
    assert res.written == 8 and len(res.sequences) == 2
    assert all(len(s.encode()) <= MAX_SEQUENCE_BYTES and s.endswith('_000') for s in res.sequences)
    recs = read_index(tmp_path / 'out')
    for bag, day in zip(bags, days):
        mine = sorted((r for r in recs if r.bag == str(bag)), key=lambda r: r.index)
        assert len({r.sequence for r in mine}) == 1 and [r.index for r in mine] == [0, 1, 2, 3]
        assert all(np.array_equal(read_rgb(r.image), f) for r, f in zip(mine, days[day]))
    again = extract(bags[::-1], tmp_path / 'out')          # the second bag keeps its hashed name
    assert again.written == 0 and again.skipped_existing == 8 and set(again.sequences) == set(res.sequences)
    assert extract(bags[1:], tmp_path / 'out').written == 0
    # two topics of one long bag: same cut, other hash; a short name is left as it was
    assert _sequence_name(long, 'cam_left', 0) != _sequence_name(long, 'cam_right', 0)
    assert _sequence_name('drive', 'cam', 3) == 'drive_cam_003'


def test_an_interrupted_extract_says_so_until_it_is_completed(tmp_path, caplog):
    # after a Ctrl-C the index listed the frames written so far and nothing told train, eval, label-import
    # or propagate that the dataset was partial
    write_bag(tmp_path / 'bag', [_noise(8, 15, (24, 32))])
    seen = []

    def ctrl_c_after_two_frames(n):
        seen.append(n)
        if sum(seen) >= 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(workers=1), progress=ctrl_c_after_two_frames)
    caplog.clear()
    partial = read_index(tmp_path / 'out')
    assert 0 < len(partial) < 8
    assert 'an extract into it did not finish' in caplog.text and 'run the same `vidseg extract` again' in caplog.text
    assert extract([tmp_path / 'bag'], tmp_path / 'out').frames == 8
    caplog.clear()
    assert len(read_index(tmp_path / 'out')) == 8
    assert 'did not finish' not in caplog.text
    assert not (tmp_path / 'out' / EXTRACTING_NAME).exists()


def test_a_bag_extracted_again_from_another_folder_is_skipped_not_copied(tmp_path, monkeypatch):
    # the index kept the bag path as typed (relative), which a run from another folder resolved elsewhere:
    # the bag got a second name and every frame was written again beside the first copy, exit 0
    write_bag(tmp_path / 'bag', [_noise(4, 21, (24, 32))])
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path)
    assert extract(['bag'], tmp_path / 'out').written == 4
    monkeypatch.chdir(tmp_path / 'elsewhere')
    again = extract([tmp_path / 'bag'], tmp_path / 'out')
    assert again.written == 0 and again.skipped_existing == 4
    assert {r.bag for r in read_index(tmp_path / 'out')} == {str(tmp_path / 'bag')}


def test_an_index_written_with_relative_bag_paths_resumes_from_another_folder(tmp_path, monkeypatch, caplog):
    # datasets made before bag paths were stored absolute name their bags relative to the folder they ran in
    write_bag(tmp_path / 'bag', [_noise(4, 22, (24, 32))])
    assert extract([tmp_path / 'bag'], tmp_path / 'out').written == 4
    index = tmp_path / 'out' / 'index.csv'
    index.write_text(index.read_text().replace(str(tmp_path / 'bag'), 'bag'))
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'elsewhere')
    again = extract([tmp_path / 'bag'], tmp_path / 'out')
    assert again.written == 0 and again.skipped_existing == 4
    assert 'is taken for the bag' in caplog.text
    assert len({r.sequence for r in read_index(tmp_path / 'out')}) == 1


def _with_exif_orientation(encoded: bytes, orientation: int, kind: int = 3) -> bytes:
    """A JPEG or PNG file's bytes with an EXIF block (IFD0: Make, Orientation) as phone cameras write it:
    an APP1 Exif segment after the JPEG's SOI, or an eXIf chunk after the PNG's IHDR."""
    import struct
    import zlib
    make = b'Phone\x00'
    ifd_at = 8
    make_at = ifd_at + 2 + 2 * 12 + 4
    value = struct.pack('>HH', orientation, 0) if kind != 4 else struct.pack('>I', orientation)
    tiff = (b'MM\x00*' + struct.pack('>I', ifd_at) + struct.pack('>H', 2) +
            struct.pack('>HHII', 0x010F, 2, len(make), make_at) + struct.pack('>HHI', 0x0112, kind, 1) + value +
            struct.pack('>I', 0) + make)
    if encoded[:2] == b'\xff\xd8':
        payload = b'Exif\x00\x00' + tiff
        return encoded[:2] + b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload + encoded[2:]
    chunk = struct.pack('>I', len(tiff)) + b'eXIf' + tiff + struct.pack('>I', zlib.crc32(b'eXIf' + tiff))
    return encoded[:33] + chunk + encoded[33:]      # 8-byte signature + 25-byte IHDR chunk


def _write_compressed_mcap(out, frames):
    """An MCAP rosbag2 of CompressedImage messages carrying ``frames`` (format, bytes) as given."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from vidseg_ros.data.bags.from_frames import COMPRESSED_T, TYPESTORE, image_msg
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection('/cam/image/compressed', COMPRESSED_T, typestore=TYPESTORE)
        for i, (fmt, data) in enumerate(frames):
            stamp = S + P * i
            header = image_msg(np.zeros((2, 2, 3), np.uint8), stamp, 'cam', 'png')[1].header
            msg = TYPESTORE.types[COMPRESSED_T](header=header, format=fmt, data=np.frombuffer(data, np.uint8))
            w.write(conn, stamp, TYPESTORE.serialize_cdr(msg, COMPRESSED_T))


def test_kept_frames_with_an_exif_orientation_read_as_the_node_decodes_the_message(tmp_path):
    """--image-format keep copied a phone-style JPEG/PNG with EXIF orientation 6 unchanged: training's read_rgb
    turned it to 24x16, the node's decode_compressed (the message's bytes) gave 16x24. The tag is now reset to
    1 in the kept file (two bytes, or six with a PNG's CRC): no pixel re-encoded."""
    import cv2
    from vidseg_ros.data.images import decode_compressed
    frames = _noise(3, 30, (16, 24))
    jpeg = _with_exif_orientation(cv2.imencode('.jpg', frames[0][:, :, ::-1])[1].tobytes(), 6)
    png = _with_exif_orientation(cv2.imencode('.png', frames[1][:, :, ::-1])[1].tobytes(), 6)
    plain = cv2.imencode('.jpg', frames[2][:, :, ::-1])[1].tobytes()
    sent = [('rgb8; jpeg compressed bgr8', jpeg), ('rgb8; png compressed bgr8', png),
            ('rgb8; jpeg compressed bgr8', plain)]
    assert read_rgb_bytes(jpeg, tmp_path / 'x.jpg').shape == (24, 16, 3)     # the file as it was kept before
    _write_compressed_mcap(tmp_path / 'bag', sent)
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(image_format='keep'))
    recs = read_index(tmp_path / 'out')
    assert res.written == 3 and not res.failed and res.exif_reset == 2 and not res.exif_reencoded
    for r, (fmt, data) in zip(recs, sent):
        node_sees = decode_compressed(fmt, data)
        assert node_sees.shape == (16, 24, 3)
        assert np.array_equal(read_rgb(r.image), node_sees), r.image
        kept = r.image.read_bytes()
        assert len(kept) == len(data) and sum(a != b for a, b in zip(kept, data)) <= 6   # only the tag (and CRC)
    assert recs[2].image.read_bytes() == plain      # without EXIF: byte for byte


def read_rgb_bytes(data, path):
    path.write_bytes(data)
    return read_rgb(path)


def test_a_kept_frame_whose_orientation_cannot_be_reset_is_encoded_again_with_a_warning(tmp_path):
    """An Orientation entry of an unusual type (UNDEFINED), which OpenCV still reads: not patched blindly; the
    frame is decoded as the node does and written again, with a warning."""
    import cv2
    from vidseg_ros.data.images import decode_compressed
    frame = _noise(1, 31, (16, 24))[0]
    png = _with_exif_orientation(cv2.imencode('.png', frame[:, :, ::-1])[1].tobytes(), 6, kind=7)
    assert read_rgb_bytes(png, tmp_path / 'x.png').shape == (24, 16, 3)
    _write_compressed_mcap(tmp_path / 'bag', [('png', png)])
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(image_format='keep'))
    assert res.written == 1 and res.exif_reencoded == 1 and 'encoded again' in res.warnings[0]
    rec = read_index(tmp_path / 'out')[0]
    assert np.array_equal(read_rgb(rec.image), decode_compressed('png', png))
    assert np.array_equal(read_rgb(rec.image), frame)      # PNG: encoded again without loss


# A recorder in another process (the recorder's own BagWriter): n0 frames in a split it closes, n1 in the next,
# flushed (complete chunks) but still open; then it waits for a line on stdin, writes n2 more and closes the bag.
_LIVE_WRITER = '''
import sys
import numpy as np
from vidseg_ros.data.bags.writer import BagWriter
from vidseg_ros.data.bags.from_frames import TYPESTORE, image_msg
out, n0, n1, n2 = sys.argv[1], *map(int, sys.argv[2:5])
w = BagWriter(out, chunk_size_bytes=1 << 16, direct_io=False)
w.add_topic('/cam/image_raw', 'sensor_msgs/msg/Image')
def frames(first, n):
    for i in range(first, first + n):
        kind, msg = image_msg(np.full((24, 32, 3), i, np.uint8), 1_700_000_000_000_000_000 + i * 10**8, 'cam')
        w.write('/cam/image_raw', TYPESTORE.serialize_cdr(msg, kind), 1_700_000_000_000_000_000 + i * 10**8)
        w.flush()
frames(0, n0)
w.split()
frames(n0, n1)
print('paused', flush=True)
sys.stdin.readline()
frames(n0 + n1, n2)
w.close()
print('closed', flush=True)
'''


def test_a_bag_still_being_recorded_gives_every_frame_written_so_far_and_resumes_when_it_ends(tmp_path):
    """The regular reader reads the splits metadata.yaml lists, and the recorder lists a split when it closes it:
    extract of a bag being recorded wrote the 10 frames of its closed split, exit 0, no warning, and left out
    the 15 of the split being written (a killed recorder's last split the same way). Its progress bar's total,
    from the indexes, said 10."""
    import subprocess
    import sys
    from vidseg_ros.tools.commands_data import _count_frames
    writer = subprocess.Popen([sys.executable, '-c', _LIVE_WRITER, str(tmp_path / 'live'), '10', '15', '5'],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == 'paused'
        assert len(bag_files(tmp_path / 'live')) == 2
        # the progress bar: no total rather than the index's 10 for 25 frames (the open split is not indexed yet)
        assert _count_frames([tmp_path / 'live'], []) is None
        res = extract([tmp_path / 'live'], tmp_path / 'out')
        assert res.written == 25 and not res.failed
        assert any('live_1.mcap not listed in its metadata.yaml' in w for w in res.warnings), res.warnings
        recs = read_index(tmp_path / 'out')
        assert [r.index for r in recs] == list(range(25))
        assert [int(read_rgb(r.image)[0, 0, 0]) for r in recs] == list(range(25))
        writer.stdin.write('go on\n')
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == 'closed'
    finally:
        writer.kill()
        writer.wait()
    assert _count_frames([tmp_path / 'live'], []) == 30          # every split listed: the index counts them all
    again = extract([tmp_path / 'live'], tmp_path / 'out')       # the recording ended: the rest, nothing twice
    assert again.written == 5 and again.skipped_existing == 25 and not again.warnings
    recs = read_index(tmp_path / 'out')
    assert [int(read_rgb(r.image)[0, 0, 0]) for r in recs] == list(range(30))
    assert [r.index for r in recs] == list(range(30)) and len({r.sequence for r in recs}) == 1


def test_kept_compressed_depth_frames_are_their_png_without_the_depth_header(tmp_path):
    """--image-format keep wrote a compressedDepth message's bytes as recorded, its 12-byte depth header (format
    enum, two quantisation floats) before the PNG: a .png no reader opens (read_rgb: 'cannot read image file'),
    and '.jpg' where the format does not say png. The PNG is kept without the header; a message with no PNG after
    it (RVL) is a failed frame with one clear reason, no file."""
    import struct

    import cv2
    from vidseg_ros.data.images import decode_compressed
    depth = (np.arange(16 * 24, dtype=np.uint32).reshape(16, 24) * 150).astype(np.uint16)
    png = cv2.imencode('.png', depth)[1].tobytes()
    header = struct.pack('<iff', 0, 0.0, 0.0)
    sent = [('16UC1; compressedDepth png', header + png), ('16UC1; compressedDepth', header + png),
            ('16UC1; compressedDepth rvl', header + b'RVL-not-a-png' * 4)]
    _write_compressed_mcap(tmp_path / 'bag', sent)
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(image_format='keep'))
    assert res.written == 2 and res.failed == 1, res.warnings
    assert any('holds no PNG after its 12-byte header' in w for w in res.warnings), res.warnings
    recs = read_index(tmp_path / 'out')
    assert len(recs) == 2
    for r, (fmt, data) in zip(recs, sent):
        assert r.image.suffix == '.png' and r.image.read_bytes() == png
        assert np.array_equal(read_rgb(r.image), decode_compressed(fmt, data))     # as the node decodes it


def test_a_frame_too_wide_for_jpeg_says_why_and_what_to_do(tmp_path):
    """A 70000-pixel-wide frame (a line-scan camera) with --image-format jpg failed as 'cannot encode
    1700000000000000000.jpg', nothing more; it now gives the size, JPEG's limit and the format that holds it."""
    write_bag(tmp_path / 'bag', [[np.full((2, 70_000, 3), 90, np.uint8)] * 2, _noise(1, 3)],
              BagFromFramesConfig(camera_info=False))
    jpg = extract([tmp_path / 'bag'], tmp_path / 'jpg', ExtractConfig(image_format='jpg'))
    assert (jpg.written, jpg.failed) == (1, 2)
    assert jpg.first_failure.endswith('.jpg (70000x2); JPEG holds at most 65500 pixels a side: extract with '
                                      '--image-format png'), jpg.first_failure
    png = extract([tmp_path / 'bag'], tmp_path / 'png', ExtractConfig(image_format='png'))
    assert (png.written, png.failed) == (3, 0)
    assert sorted(read_rgb(r.image).shape for r in read_index(tmp_path / 'png')) == [(2, 70_000, 3)] * 2 + [(16, 24, 3)]


def _bag_with_a_damaged_message(path, msgtype: str, cut) -> None:
    """10 frames stamped in sim time (header 100.0 .. 100.9 s, logged at wall-clock time); message 5's bytes
    ``cut(bytes)``."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vidseg_ros.data.bags.from_frames import TYPESTORE
    t = TYPESTORE.types
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conn = w.add_connection('/cam', msgtype, typestore=TYPESTORE)
    for i in range(10):
        header = t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](sec=100, nanosec=i * 10**8),
                                          frame_id='cam')
        rgb = np.full((4, 6, 3), 20 * i, np.uint8)
        if msgtype.endswith('CompressedImage'):
            msg = t[msgtype](header=header, format='png', data=cv2.imencode('.png', rgb)[1].ravel())
        else:
            msg = t[msgtype](header=header, height=4, width=6, encoding='rgb8', is_bigendian=0, step=18,
                             data=rgb.ravel())
        data = bytes(TYPESTORE.serialize_cdr(msg, msgtype))
        w.write(conn, 1_700_000_000 * 10**9 + i * 10**8, cut(data) if i == 5 else data)
    w.close()


@pytest.mark.parametrize('msgtype, image_format, cut', [
    ('sensor_msgs/msg/Image', 'png', lambda d: d[:8]),                 # too short to hold a stamp: log time
    ('sensor_msgs/msg/Image', 'png', lambda d: d[:4] + (2 * 10**9).to_bytes(4, 'little') + d[8:20]),  # stamp noise
    ('sensor_msgs/msg/CompressedImage', 'keep', lambda d: d[:30]),
    ('sensor_msgs/msg/CompressedImage', 'png', lambda d: d[:30])])
def test_a_damaged_message_is_one_failed_frame_and_splits_nothing(tmp_path, msgtype, image_format, cut):
    """One message whose bytes do not deserialise, among 9 good ones: placed by its stamp (noise, or a log time
    of another clock than the sim-time stamps), it split the 9 frames into two sequences (5 + 4); with
    --image-format keep, its SerdeError ended the whole extract (exit 2, the 4 frames after it lost, a re-run the
    same). Now it is one failed frame, saying why, and the 9 others are one sequence, indexed 0..8."""
    _bag_with_a_damaged_message(tmp_path / 'bag', msgtype, cut)
    res = extract([tmp_path / 'bag'], tmp_path / 'out', ExtractConfig(image_format=image_format))
    assert (res.written, res.failed) == (9, 1)
    assert 'SerdeError' in res.first_failure and '@ 1700000000500000000:' in res.first_failure
    recs = read_index(tmp_path / 'out')
    assert [(r.sequence, r.index) for r in recs] == [('bag_cam_000', i) for i in range(9)]
    assert [read_rgb(r.image)[0, 0, 0] for r in recs] == [20 * i for i in range(10) if i != 5]
    assert sorted(p.name for p in (tmp_path / 'out' / 'images').iterdir()) == ['bag_cam_000']
