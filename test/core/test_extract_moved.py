"""A bag found again at another path (moved with its dataset, renamed, copied): its frames are not written twice,
and a different bag of the same name (or with the same stamps) stays apart (``datasets.moved_bags``)."""
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest

from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag
from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.data.datasets.layouts import read_index, write_index


def _frames(seed: int, n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24, 32, 3), np.uint8) for _ in range(n)]


def _files(ds):
    return sorted(p.relative_to(ds) for p in (ds / 'images').rglob('*') if p.is_file())


def _first_run(tmp_path, seed=1, cfg=None):
    write_bag(tmp_path / 'p' / 'drive', [_frames(seed)])
    assert extract([tmp_path / 'p' / 'drive'], tmp_path / 'p' / 'ds', cfg).written == 6
    return _files(tmp_path / 'p' / 'ds')


def test_a_dataset_moved_with_its_bag_resumes_without_writing_frames_again(tmp_path, caplog):
    # `mv parent parent2` then extract again: every frame was written a second time under drive-<hash>_...
    # (6 -> 12 frames, exit 0, one INFO line)
    caplog.set_level(logging.INFO, logger='vidseg_ros')
    before = _first_run(tmp_path)
    ds = tmp_path / 'p' / 'ds'
    recs = read_index(ds)
    label = ds / 'labels' / recs[0].sequence / 'a.png'
    label.parent.mkdir(parents=True)
    label.write_bytes(b'x')
    write_index(ds, [replace(recs[0], label=label, label_source='human'), *recs[1:]])
    (tmp_path / 'p').rename(tmp_path / 'p2')
    again = extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds')
    assert (again.written, again.skipped_existing) == (0, 6)
    assert _files(tmp_path / 'p2' / 'ds') == before
    recs = read_index(tmp_path / 'p2' / 'ds')
    assert len(recs) == 6 and {r.bag for r in recs} == {str(tmp_path / 'p2' / 'drive')}
    assert [r.label_source for r in recs].count('human') == 1
    assert 'is the bag' in caplog.text
    # known by its new path now: a third run needs no look at its content
    caplog.clear()
    assert extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds').skipped_existing == 6
    assert 'is the bag' not in caplog.text


def test_a_renamed_bag_is_known_by_its_frames(tmp_path):
    before = _first_run(tmp_path)
    (tmp_path / 'p' / 'drive').rename(tmp_path / 'p' / 'drive_monday')
    again = extract([tmp_path / 'p' / 'drive_monday'], tmp_path / 'p' / 'ds')
    assert (again.written, again.skipped_existing) == (0, 6)
    assert _files(tmp_path / 'p' / 'ds') == before


def test_a_dataset_copied_with_its_bag_resumes_from_the_copy(tmp_path):
    before = _first_run(tmp_path)
    shutil.copytree(tmp_path / 'p', tmp_path / 'q')     # the original stays where it was
    again = extract([tmp_path / 'q' / 'drive'], tmp_path / 'q' / 'ds')
    assert (again.written, again.skipped_existing) == (0, 6)
    assert _files(tmp_path / 'q' / 'ds') == before
    assert {r.bag for r in read_index(tmp_path / 'q' / 'ds')} == {str(tmp_path / 'q' / 'drive')}


def test_a_dataset_copied_without_its_bag_resumes_from_the_bag_in_place(tmp_path):
    before = _first_run(tmp_path)
    shutil.copytree(tmp_path / 'p' / 'ds', tmp_path / 'q' / 'ds')
    again = extract([tmp_path / 'p' / 'drive'], tmp_path / 'q' / 'ds')
    assert (again.written, again.skipped_existing) == (0, 6)
    assert _files(tmp_path / 'q' / 'ds') == before


def test_a_moved_bag_extracted_again_with_more_frames_adds_only_those(tmp_path):
    # the first run kept every 2nd frame: the bag has more frames than the dataset, all of the dataset's among them
    write_bag(tmp_path / 'p' / 'drive', [_frames(3)])
    assert extract([tmp_path / 'p' / 'drive'], tmp_path / 'p' / 'ds', ExtractConfig(every=2)).written == 3
    (tmp_path / 'p').rename(tmp_path / 'p2')
    again = extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds')
    assert (again.written, again.skipped_existing) == (3, 3)
    assert len({r.sequence for r in read_index(tmp_path / 'p2' / 'ds')}) == 1
    assert len(_files(tmp_path / 'p2' / 'ds')) == 6


@pytest.mark.parametrize('quality', [95, 60])
def test_a_moved_bag_extracted_as_jpeg_is_known_by_its_frames(tmp_path, quality):
    # a JPEG file is the frame encoded again: as this run encodes it, or (another --jpeg-quality) near it
    ramp = np.linspace(0, 255, 32, dtype=np.uint8)
    frames = [np.stack([np.tile(ramp, (24, 1)), np.full((24, 32), 20 * i, np.uint8), np.tile(ramp[::-1], (24, 1))],
                       axis=2) for i in range(6)]
    write_bag(tmp_path / 'p' / 'drive', [frames])
    cfg = ExtractConfig(image_format='jpg', jpeg_quality=quality)
    assert extract([tmp_path / 'p' / 'drive'], tmp_path / 'p' / 'ds', cfg).written == 6
    (tmp_path / 'p').rename(tmp_path / 'p2')
    again = extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds', ExtractConfig(image_format='jpg'))
    assert (again.written, again.skipped_existing) == (0, 6)


def test_a_moved_bag_of_noise_like_frames_extracted_as_jpeg_is_known_by_its_frames(tmp_path):
    # noise is the worst case for JPEG (tens of levels off at quality 60); encoded as this run would, it is exact
    _first_run(tmp_path, cfg=ExtractConfig(image_format='jpg', jpeg_quality=60))
    (tmp_path / 'p').rename(tmp_path / 'p2')
    cfg = ExtractConfig(image_format='jpg', jpeg_quality=60)
    again = extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds', cfg)
    assert (again.written, again.skipped_existing) == (0, 6)


@pytest.mark.parametrize('old_bag_kept', [True, False])
def test_another_bag_of_that_name_and_those_stamps_stays_apart(tmp_path, old_bag_kept):
    # the same name, the same stamps (two sim-time recordings), other pixels: a second bag, not the first one moved
    _first_run(tmp_path, seed=1)
    if not old_bag_kept:
        shutil.rmtree(tmp_path / 'p' / 'drive')
    write_bag(tmp_path / 'day2' / 'drive', [_frames(2)])
    again = extract([tmp_path / 'day2' / 'drive'], tmp_path / 'p' / 'ds')
    assert (again.written, again.skipped_existing) == (6, 0)
    recs = read_index(tmp_path / 'p' / 'ds')
    assert len(recs) == 12 and len({r.sequence for r in recs}) == 2
    assert {r.bag for r in recs} == {str(tmp_path / 'p' / 'drive'), str(tmp_path / 'day2' / 'drive')}


def test_another_bag_of_other_stamps_stays_apart_though_the_first_is_gone(tmp_path):
    _first_run(tmp_path, seed=1)
    shutil.rmtree(tmp_path / 'p' / 'drive')
    cfg = BagFromFramesConfig(start_ns=1_800_000_000_000_000_000)
    write_bag(tmp_path / 'p' / 'drive_b', [_frames(1)], cfg)     # the same pixels, another time
    again = extract([tmp_path / 'p' / 'drive_b'], tmp_path / 'p' / 'ds')
    assert (again.written, again.skipped_existing) == (6, 0)
    assert len(read_index(tmp_path / 'p' / 'ds')) == 12


def test_two_bags_of_one_name_moved_with_their_dataset_keep_their_sequences(tmp_path):
    # the second got drive-<8 hex digits of its old path>: that name stays, though its path changed
    for day, seed in (('mon', 1), ('tue', 2)):
        write_bag(tmp_path / 'p' / day / 'drive', [_frames(seed)])
    bags = [tmp_path / 'p' / day / 'drive' for day in ('mon', 'tue')]
    assert extract(bags, tmp_path / 'p' / 'ds').written == 12
    before = {(r.sequence, r.stamp_ns, r.bag.replace('/p/', '/p2/')) for r in read_index(tmp_path / 'p' / 'ds')}
    (tmp_path / 'p').rename(tmp_path / 'p2')
    again = extract([tmp_path / 'p2' / day / 'drive' for day in ('tue', 'mon')], tmp_path / 'p2' / 'ds')
    assert (again.written, again.skipped_existing) == (0, 12)
    assert {(r.sequence, r.stamp_ns, r.bag) for r in read_index(tmp_path / 'p2' / 'ds')} == before


def test_a_renamed_bag_of_a_long_name_is_known_by_its_frames(tmp_path):
    # its sequence names were shortened (over 200 bytes) from the old name, which the new one does not give
    long = 'd' * 190
    write_bag(tmp_path / long, [_frames(4)])
    assert extract([tmp_path / long], tmp_path / 'ds').written == 6
    before = _files(tmp_path / 'ds')
    (tmp_path / long).rename(tmp_path / ('e' * 190))
    again = extract([tmp_path / ('e' * 190)], tmp_path / 'ds')
    assert (again.written, again.skipped_existing) == (0, 6)
    assert _files(tmp_path / 'ds') == before


def test_a_bag_that_fails_to_read_when_compared_is_extracted_as_a_new_one(tmp_path, monkeypatch):
    # the comparison is no reason to stop the run: the extract's own read says what is wrong, if anything
    from vidseg_ros.data.datasets import moved_bags

    def unreadable(*args, **kwargs):
        raise OSError(5, 'Input/output error')
        yield
    _first_run(tmp_path)
    (tmp_path / 'p').rename(tmp_path / 'p2')
    monkeypatch.setattr(moved_bags, 'read_messages', unreadable)
    again = extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds')
    assert (again.written, again.skipped_existing) == (6, 0)


def _ramps(offset: int) -> list[np.ndarray]:
    ramp = np.linspace(0, 200, 32).astype(np.uint8) + offset
    return [np.stack([np.tile(ramp, (24, 1))] * 3, axis=2) + np.uint8(5 * i) for i in range(6)]


@pytest.mark.parametrize('fmt, quality, offset', [('png', 95, 1), ('jpg', 60, 12)])
def test_a_bag_of_those_stamps_and_near_pixels_stays_apart(tmp_path, fmt, quality, offset):
    # PNG files are the frame itself: one level off is another frame; a JPEG one is the frame within the error of
    # JPEG (1.6 levels at quality 95 on CamVid, 5 at 30): a scene 12 levels brighter is another recording
    write_bag(tmp_path / 'p' / 'drive', [_ramps(0)])
    assert extract([tmp_path / 'p' / 'drive'], tmp_path / 'p' / 'ds', ExtractConfig(image_format=fmt)).written == 6
    shutil.rmtree(tmp_path / 'p' / 'drive')
    write_bag(tmp_path / 'day2' / 'drive', [_ramps(offset)])
    cfg = ExtractConfig(image_format=fmt, jpeg_quality=quality)
    assert extract([tmp_path / 'day2' / 'drive'], tmp_path / 'p' / 'ds', cfg).written == 6
    assert len(read_index(tmp_path / 'p' / 'ds')) == 12


def test_a_second_recording_that_parts_from_the_first_late_stays_apart(tmp_path):
    # a deterministic simulation run twice: the same stamps and frames until the runs part, here at the last frame,
    # which is among those compared
    _first_run(tmp_path, seed=1)
    shutil.rmtree(tmp_path / 'p' / 'drive')
    write_bag(tmp_path / 'day2' / 'drive', [_frames(1)[:5] + _frames(2)[5:]])
    assert extract([tmp_path / 'day2' / 'drive'], tmp_path / 'p' / 'ds').written == 6
    assert len(read_index(tmp_path / 'p' / 'ds')) == 12


def test_a_bag_of_those_stamps_and_another_frame_size_stays_apart(tmp_path):
    _first_run(tmp_path, seed=1)
    shutil.rmtree(tmp_path / 'p' / 'drive')
    write_bag(tmp_path / 'day2' / 'drive', [[f.transpose(1, 0, 2).copy() for f in _frames(1)]])
    assert extract([tmp_path / 'day2' / 'drive'], tmp_path / 'p' / 'ds').written == 6
    assert len(read_index(tmp_path / 'p' / 'ds')) == 12


@pytest.mark.parametrize('stamp', ['header', 'log'])
def test_a_moved_bag_is_known_by_the_stamps_it_was_extracted_with(tmp_path, stamp):
    # header stamps 1 s apart, log times 0.1 s apart: the dataset's stamps are the ones --stamp chose
    from support.bags import image_cdr, rosbag2
    (tmp_path / 'p').mkdir()
    rosbag2(tmp_path / 'p' / 'drive', [(10**18 + i * 10**8, image_cdr(i)) for i in range(6)])
    cfg = ExtractConfig(stamp=stamp)
    assert extract([tmp_path / 'p' / 'drive'], tmp_path / 'p' / 'ds', cfg).written == 6
    (tmp_path / 'p').rename(tmp_path / 'p2')
    again = extract([tmp_path / 'p2' / 'drive'], tmp_path / 'p2' / 'ds', cfg)
    assert (again.written, again.skipped_existing) == (0, 6)


@pytest.mark.parametrize('start_ns', [1_700_000_000_000_000_000, 1_800_000_000_000_000_000])
def test_another_days_bag_is_not_taken_for_one_an_old_index_names_by_a_relative_path(tmp_path, monkeypatch,
                                                                                      start_ns):
    # an index written before bag paths were stored absolute names day 1's bag `drive`; day 2's `drive` run from
    # another folder was taken for it by name: at the same stamps its 6 frames were skipped (lost, exit 0), at
    # others written into day 1's sequence, an index no command could read ("frame 0 ... is also row 1")
    write_bag(tmp_path / 'day1' / 'drive', [_frames(1)])
    write_bag(tmp_path / 'day2' / 'drive', [_frames(2)], BagFromFramesConfig(start_ns=start_ns))
    monkeypatch.chdir(tmp_path / 'day1')
    assert extract(['drive'], tmp_path / 'ds').written == 6
    index = tmp_path / 'ds' / 'index.csv'
    index.write_text(index.read_text().replace(str(tmp_path / 'day1' / 'drive'), 'drive'))
    monkeypatch.chdir(tmp_path)
    again = extract([tmp_path / 'day2' / 'drive'], tmp_path / 'ds')
    assert (again.written, again.skipped_existing) == (6, 0)
    recs = read_index(tmp_path / 'ds')
    assert len(recs) == 12 and len({r.sequence for r in recs}) == 2
