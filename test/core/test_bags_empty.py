"""A bag the recorder was stopped in before its first message. The recorder now leaves an empty `<bag>_0.mcap` (the
topics' schemas and channels, no message) listed in metadata.yaml, as rosbag2 does; before, the folder held
metadata.yaml alone, listing no file and no message. Our own tools called that one 'no .mcap or .db3 files' (the
readers) and 'not a bag' (bag-recover), and one such bag (the demo's, after a quick double Ctrl-C) stopped an extract
of many drives: bags of both kinds read as empty."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap.writer import Writer as McapWriter
from rosbags.highlevel import AnyReader
from support.paths import ROOT

from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.bags.reader import bag_files, read_messages
from vidseg_ros.data.bags.writer import BagWriter
from vidseg_ros.data.recorder.core import Recorder


def _run(*args):
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})


@pytest.fixture
def old_empty_bag(tmp_path):
    """What an older recorder left: metadata.yaml alone (a writer that never opened a file)."""
    BagWriter(tmp_path / 'old_empty').write_metadata()
    assert [p.name for p in (tmp_path / 'old_empty').iterdir()] == ['metadata.yaml']
    return tmp_path / 'old_empty'


@pytest.fixture
def empty_bag(tmp_path):
    recorder = Recorder(tmp_path / 'empty', min_free_disk_bytes=0)
    recorder.add_topic('/image', 'sensor_msgs/msg/Image')
    recorder.add_topic('/image/camera_info', 'sensor_msgs/msg/CameraInfo')
    assert recorder.stop() and recorder.error is None
    return tmp_path / 'empty'


def test_a_recorder_stopped_before_its_first_message_leaves_an_empty_listed_file(empty_bag):
    """As rosbag2 leaves it: `<bag>_0.mcap` with the topics' schemas and channels, listed with 0 messages."""
    assert sorted(p.name for p in empty_bag.iterdir()) == ['empty_0.mcap', 'metadata.yaml']
    info = yaml.safe_load((empty_bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['relative_file_paths'] == ['empty_0.mcap'] and info['message_count'] == 0
    assert [f['message_count'] for f in info['files']] == [0]
    assert {t['topic_metadata']['name']: t['message_count'] for t in info['topics_with_message_count']} == {
        '/image': 0, '/image/camera_info': 0}
    with open(empty_bag / 'empty_0.mcap', 'rb') as f:
        summary = make_reader(f).get_summary()
    assert summary.statistics.message_count == 0
    assert {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()} == {
        '/image': 'sensor_msgs/msg/Image', '/image/camera_info': 'sensor_msgs/msg/CameraInfo'}
    assert all(s.data for s in summary.schemas.values())     # full definitions, as in any other file
    with AnyReader([empty_bag]) as reader:
        assert reader.message_count == 0 and {c.topic for c in reader.connections} == {'/image', '/image/camera_info'}


def test_a_bag_that_recorded_nothing_reads_as_empty(empty_bag, old_empty_bag):
    for bag in (empty_bag, old_empty_bag):
        warnings, found = [], {}
        assert list(read_messages(bag, warnings=warnings, found=found)) == [] and warnings == []
        assert found == ({'/image': 'sensor_msgs/msg/Image', '/image/camera_info': 'sensor_msgs/msg/CameraInfo'}
                         if bag == empty_bag else {})
    assert bag_files(old_empty_bag) == []


def test_bag_recover_of_a_bag_that_recorded_nothing_has_nothing_to_do(empty_bag, old_empty_bag):
    """The old kind was 'holds no .mcap file: not a bag', exit 2."""
    p = _run('bag-recover', empty_bag)
    assert (p.returncode, p.stderr) == (0, '') and 'every file is complete; nothing to do' in p.stdout
    p = _run('bag-recover', old_empty_bag)
    assert (p.returncode, p.stderr) == (0, ''), p.stderr
    assert p.stdout == f'{old_empty_bag}: recorded nothing (its metadata.yaml lists no file and no message); ' \
                       'nothing to do\n'
    assert [p.name for p in old_empty_bag.parent.iterdir() if 'recovered' in p.name] == []


def test_a_killed_recording_that_left_an_empty_file_is_recovered_as_empty(tmp_path):
    """A recorder killed while writing its first, still empty file (the MCAP header only, no summary)."""
    bag = tmp_path / 'killed'
    bag.mkdir()
    with open(bag / 'killed_0.mcap', 'wb') as f:
        w = McapWriter(f)
        w.start(profile='ros2', library='x')
        f.flush()
        cut = f.tell()
    os.truncate(bag / 'killed_0.mcap', cut)
    p = _run('bag-recover', bag, '--force')
    assert p.returncode == 0, p.stderr
    assert 'killed_0.mcap: 0 messages recovered' in p.stdout
    warnings = []
    assert list(read_messages(tmp_path / 'killed_recovered', warnings=warnings)) == [] and warnings == []


def test_a_folder_without_files_or_such_metadata_is_still_no_bag(tmp_path, old_empty_bag):
    (tmp_path / 'bare').mkdir()
    with pytest.raises(FileNotFoundError, match='no .mcap or .db3 files'):
        bag_files(tmp_path / 'bare')
    listed = tmp_path / 'lost_files'
    listed.mkdir()
    text = (old_empty_bag / 'metadata.yaml').read_text()
    (listed / 'metadata.yaml').write_text(text.replace('relative_file_paths: []', 'relative_file_paths: [a_0.mcap]'))
    with pytest.raises(FileNotFoundError, match='no .mcap or .db3 files'):
        bag_files(listed)


def test_extract_of_drives_two_of_which_recorded_nothing_takes_the_others(tmp_path, empty_bag, old_empty_bag):
    frames = [np.full((24, 32, 3), 40 * i, np.uint8) for i in range(3)]
    write_bag(tmp_path / 'drive', [frames])
    p = _run('extract', tmp_path / 'drive', empty_bag, old_empty_bag, '--out', tmp_path / 'ds')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)['written'] == 3
    assert f'{empty_bag}: no image messages' in p.stderr and f'{old_empty_bag}: no image messages' in p.stderr
    assert len(list((tmp_path / 'ds' / 'images').rglob('*.png'))) == 3
    assert cv2.imread(str(sorted((tmp_path / 'ds' / 'images').rglob('*.png'))[1]))[0, 0, 0] == 40
