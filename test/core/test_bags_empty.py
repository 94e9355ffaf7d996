"""A bag the recorder was stopped in before its first message: a folder holding only metadata.yaml, which lists no
file and no message (the recorder opens its first file on the first message). Our own tools called it 'no .mcap
or .db3 files', and one such bag (the demo's, after a quick double Ctrl-C) stopped an extract of many drives."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support.paths import ROOT

from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.bags.reader import bag_files, read_messages
from vidseg_ros.data.recorder.core import Recorder


@pytest.fixture
def empty_bag(tmp_path):
    recorder = Recorder(tmp_path / 'empty')
    recorder.add_topic('/image', 'sensor_msgs/msg/Image')
    assert recorder.stop()
    assert [p.name for p in (tmp_path / 'empty').iterdir()] == ['metadata.yaml']
    return tmp_path / 'empty'


def test_a_bag_that_recorded_nothing_reads_as_empty(empty_bag):
    warnings = []
    assert bag_files(empty_bag) == []
    assert list(read_messages(empty_bag, warnings=warnings)) == [] and warnings == []


def test_a_folder_without_files_or_such_metadata_is_still_no_bag(tmp_path, empty_bag):
    (tmp_path / 'bare').mkdir()
    with pytest.raises(FileNotFoundError, match='no .mcap or .db3 files'):
        bag_files(tmp_path / 'bare')
    listed = tmp_path / 'lost_files'
    listed.mkdir()
    text = (empty_bag / 'metadata.yaml').read_text()
    (listed / 'metadata.yaml').write_text(text.replace('relative_file_paths: []', 'relative_file_paths: [a_0.mcap]'))
    with pytest.raises(FileNotFoundError, match='no .mcap or .db3 files'):
        bag_files(listed)


def test_extract_of_drives_one_of_which_recorded_nothing_takes_the_others(tmp_path, empty_bag):
    frames = [np.full((24, 32, 3), 40 * i, np.uint8) for i in range(3)]
    write_bag(tmp_path / 'drive', [frames])
    p = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'extract', str(tmp_path / 'drive'), str(empty_bag),
                        '--out', str(tmp_path / 'ds')], capture_output=True, text=True, timeout=300,
                       env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)['written'] == 3
    assert f'{empty_bag}: no image messages' in p.stderr
    assert len(list((tmp_path / 'ds' / 'images').rglob('*.png'))) == 3
    assert cv2.imread(str(sorted((tmp_path / 'ds' / 'images').rglob('*.png'))[1]))[0, 0, 0] == 40
