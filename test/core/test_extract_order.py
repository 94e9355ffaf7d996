"""extract on frames that arrive out of stamp order: a frame a little late takes its place in its sequence (one
swapped pair split a 20-frame drive in two, and `propagate` skips a piece without a human label); a jump back
(a bag looped, sim time reset, another recording) still starts a new sequence; every frame is accounted for."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from rosbags.rosbag2 import StoragePlugin, Writer

from support.bags import IMAGE, TS
from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.data.datasets.layouts import read_index
from vidseg_ros.data.datasets.stamp_order import REORDER_FRAMES, StampOrder
from vidseg_ros.data.images import read_rgb

RATE_HZ = 20      # REORDER_FRAMES frames are 0.4 s: less than the default max_gap_s 0.5


def _bag(path, frames, topics=('/cam/image',)):
    """A bag of 8x8 mono8 frames in the order given: (stamp in s, pixel value), on each topic, one per 0.1 s of
    log time (receive order)."""
    T = TS.types
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conns = [w.add_connection(t, IMAGE, typestore=TS) for t in topics]
    for k, (stamp_s, value) in enumerate(frames):
        ns = round(stamp_s * 1e9)
        header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=ns // 10**9,
                                                                                 nanosec=ns % 10**9), frame_id='cam')
        msg = T[IMAGE](header=header, height=8, width=8, encoding='mono8', is_bigendian=0, step=8,
                       data=np.full(64, value, np.uint8))
        for c in conns:
            w.write(c, 10**9 + k * 10**8, TS.serialize_cdr(msg, IMAGE))
    w.close()
    return path


def _drive(n=20, t0=10.0):
    """(stamp, value) of n frames at RATE_HZ: the value is the frame's number."""
    return [(t0 + i / RATE_HZ, i) for i in range(n)]


def _late(frames, k, by):
    """``frames`` with frame k received after the ``by`` frames that follow it."""
    frames = list(frames)
    frames.insert(k + by, frames.pop(k))
    return frames


def _sequences(out):
    """sequence -> its frames' (index, stamp_ns, pixel value) in index order."""
    seqs: dict[str, list] = {}
    for r in read_index(out):
        seqs.setdefault(r.sequence, []).append((r.index, r.stamp_ns, int(read_rgb(r.image)[0, 0, 0])))
    return {s: sorted(v) for s, v in sorted(seqs.items())}


def _accounted(res, messages):
    assert res.image_messages == res.selected == messages
    assert res.written + res.duplicates == messages and not res.failed


@pytest.mark.parametrize('by', [1, 3, REORDER_FRAMES])
def test_a_frame_that_arrives_late_keeps_its_place_in_one_sequence(tmp_path, by):
    # before: a pair swapped in receive order made 2 sequences of 6 + 14 frames
    res = extract([_bag(tmp_path / 'bag', _late(_drive(), 5, by))], tmp_path / 'out')
    _accounted(res, 20)
    seqs = _sequences(tmp_path / 'out')
    assert len(seqs) == 1, {s: len(v) for s, v in seqs.items()}
    (frames,) = seqs.values()
    assert [f[0] for f in frames] == list(range(20))                          # index: true frame distance
    assert [f[2] for f in frames] == list(range(20))                          # each file is its own frame
    assert [f[1] for f in frames] == sorted(f[1] for f in frames)


def test_late_frames_on_several_topics_with_workers(tmp_path):
    frames = _late(_late(_drive(), 2, 1), 12, 4)
    res = extract([_bag(tmp_path / 'bag', frames, ('/a/image', '/b/image'))], tmp_path / 'out',
                  ExtractConfig(workers=2, every=2))
    assert res.image_messages == res.selected == 40 and res.written == 20 and not res.duplicates
    seqs = _sequences(tmp_path / 'out')
    assert len(seqs) == 2
    for frames in seqs.values():
        assert [f[0] for f in frames] == list(range(0, 20, 2)) and [f[2] for f in frames] == list(range(0, 20, 2))


def test_a_frame_later_than_the_buffer_reaches_splits_as_before_and_none_is_lost(tmp_path):
    res = extract([_bag(tmp_path / 'bag', _late(_drive(), 5, REORDER_FRAMES + 1))], tmp_path / 'out')
    _accounted(res, 20)
    seqs = _sequences(tmp_path / 'out')
    assert len(seqs) > 1 and sorted(f[2] for v in seqs.values() for f in v) == list(range(20))
    for frames in seqs.values():        # never out of order within a sequence
        assert [f[0] for f in frames] == list(range(len(frames)))
        assert all(a[1] < b[1] for a, b in zip(frames, frames[1:]))


@pytest.mark.parametrize('second_s', [10.0, 5.0, 50.0], ids=['looped', 'reset-before-first', 'reset-after-gap'])
def test_a_jump_back_starts_a_new_sequence(tmp_path, second_s):
    # a bag looped (the same stamps again), sim time reset or a second recording: two sequences of 10. Stamps
    # before the topic's first frame were dropped (10 of 20 written, counted nowhere, no warning)
    frames = _drive(10) + [(s, v + 10) for s, v in _drive(10, t0=second_s)]
    res = extract([_bag(tmp_path / 'bag', frames)], tmp_path / 'out')
    _accounted(res, 20)
    seqs = list(_sequences(tmp_path / 'out').values())
    assert [[f[2] for f in v] for v in seqs] == [list(range(10)), list(range(10, 20))]


def test_a_step_back_over_max_gap_splits_one_under_it_is_reordered(tmp_path):
    # frame 9 arrives after frame 15: 0.3 s back; with max_gap_s 0.25 a new sequence, with 0.35 its place
    bag = _bag(tmp_path / 'bag', _late(_drive(), 9, 6))
    res = extract([bag], tmp_path / 'split', ExtractConfig(max_gap_s=0.25))
    _accounted(res, 20)
    assert len(_sequences(tmp_path / 'split')) > 1
    extract([bag], tmp_path / 'kept', ExtractConfig(max_gap_s=0.35))
    assert [[f[2] for f in v] for v in _sequences(tmp_path / 'kept').values()] == [list(range(20))]


def test_a_repeated_stamp_arriving_late_is_a_duplicate(tmp_path):
    frames = _drive(6)
    frames.insert(4, frames[2])          # frame 2 sent again after frame 3
    res = extract([_bag(tmp_path / 'bag', frames)], tmp_path / 'out')
    _accounted(res, 7)
    assert res.duplicates == 1
    assert [[f[2] for f in v] for v in _sequences(tmp_path / 'out').values()] == [list(range(6))]


def test_the_time_range_counts_from_the_first_frame_by_stamp_and_the_last_held_are_written(tmp_path):
    frames = _late(_drive(5), 0, 4)       # the first frame arrives last
    res = extract([_bag(tmp_path / 'bag', frames)], tmp_path / 'out', ExtractConfig(stop_s=0.12))
    assert res.written == 3               # 0.0 .. 0.1 s after the first frame by stamp, not by arrival
    assert [[f[2] for f in v] for v in _sequences(tmp_path / 'out').values()] == [[0, 1, 2]]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(stamps=st.lists(st.integers(0, 3_000), max_size=60), depth=st.integers(0, 10),
       step=st.sampled_from([0.0, 0.5, 10]))
def test_stamp_order_holds_at_most_its_depth_and_loses_nothing(stamps, depth, step):
    order, out = StampOrder(depth, step), []
    for i, s in enumerate(stamps):
        out += order.push(s * 10**8 // 10, i)     # 0..30 s in 0.01 s steps
        assert len(order.held) <= depth
    out += order.drain()
    assert not order.held and sorted(item for _, item in out) == list(range(len(stamps)))
    assert [s for s, _ in out] == [stamps[i] * 10**8 // 10 for _, i in out]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(delays=st.lists(st.integers(0, REORDER_FRAMES), max_size=80))
def test_stamp_order_restores_any_order_where_no_frame_is_later_than_its_depth(delays):
    # frame i arrives at i + delays[i]: after at most REORDER_FRAMES frames stamped after it, 0.4 s at 20 Hz
    arrival = sorted(range(len(delays)), key=lambda i: (i + delays[i], i))
    order, out = StampOrder(REORDER_FRAMES, 0.5), []
    for i in arrival:
        out += order.push(i * 5 * 10**7, i)
    out += order.drain()
    assert [item for _, item in out] == list(range(len(delays)))


def test_a_dataset_extracted_before_frames_were_reordered_resumes_without_copies(tmp_path, monkeypatch):
    # made with late frames in sequences of their own (6 + 14); extracted again, the 14 were written a second
    # time into the sequence they now belong to: 34 rows for 20 messages
    from vidseg_ros.data.datasets import sequence_planner
    bag = _bag(tmp_path / 'bag', _late(_drive(), 5, 1))
    with monkeypatch.context() as m:
        m.setattr(sequence_planner, 'REORDER_FRAMES', 0)     # as before: every frame placed as it arrives
        extract([bag], tmp_path / 'out')
    before = _sequences(tmp_path / 'out')
    assert [len(v) for v in before.values()] == [6, 14]
    again = extract([bag], tmp_path / 'out')
    assert again.written == 0 and again.skipped_existing == 20
    assert _sequences(tmp_path / 'out') == before


def test_a_looped_bag_whose_second_pass_is_missing_writes_it_again(tmp_path):
    # the same stamps twice: the second pass is not taken for the first's files
    bag = _bag(tmp_path / 'bag', _drive(10) + [(s, v + 10) for s, v in _drive(10)])
    extract([bag], tmp_path / 'out')
    for f in (tmp_path / 'out' / 'images' / 'bag_cam_image_001').iterdir():
        f.unlink()
    again = extract([bag], tmp_path / 'out')
    assert again.written == 10 and again.skipped_existing == 10
    assert [[f[2] for f in v] for v in _sequences(tmp_path / 'out').values()] == [list(range(10)), list(range(10, 20))]


def test_the_frames_held_are_written_when_the_reader_fails(tmp_path, monkeypatch):
    from vidseg_ros.data.datasets import extract as extract_module
    bag = _bag(tmp_path / 'bag', _drive(6))
    real = extract_module.read_messages

    def failing(*args, **kwargs):
        yield from list(real(*args, **kwargs))[:5]
        raise OSError(5, 'Input/output error', str(bag))
    monkeypatch.setattr(extract_module, 'read_messages', failing)
    with pytest.raises(OSError):
        extract([bag], tmp_path / 'out')
    assert [[f[2] for f in v] for v in _sequences(tmp_path / 'out').values()] == [list(range(5))]
