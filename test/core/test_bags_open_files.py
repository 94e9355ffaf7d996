"""A bag of more splits than the process may open files (``ulimit -n``, 1024 by default on most desktops: a bag of 1 s
splits longer than 17 min). rosbags opens every split before the first message; it failed with 'Too many open
files', and the intact bag was read record by record, reported as damaged ('regular reader failed ... salvaging').
The splits are now opened a group at a time, read in the same order, without a warning."""
import json
import resource
import subprocess
import sys

import pytest
from rosbags.rosbag2 import CompressionMode
from support.bags import IMAGE, INFO, image_cdr, info_cdr, rosbag2
from support.paths import ROOT

from vidseg_ros.data.bags.reader import list_topics, read_messages
from vidseg_ros.data.bags.writer import BagWriter

LIMIT = 40   # open files: the interpreter and pytest hold ~10


def _bag(path, n, jitter_ns=0):
    """``n`` frames and infos, a frame and its info per split; with ``jitter_ns`` log times go back across splits."""
    w = BagWriter(path, chunk_size_bytes=4000, max_bag_size_bytes=1500)
    w.add_topic('/cam/image', IMAGE)
    w.add_topic('/cam/info', INFO)
    for i in range(n):
        t = 10**9 + i * 10**6 - (jitter_ns if i % 5 == 4 else 0)
        w.write('/cam/image', image_cdr(i), t)
        w.write('/cam/info', info_cdr(i), t + 1)
    w.close()
    return path, len(w.files)


_READ = '''
import json, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from vidseg_ros.data.bags.reader import list_topics, read_messages
warnings = []
got = [(m.topic, m.log_time_ns, m.data.hex()) for m in read_messages(sys.argv[1], warnings=warnings)]
print(json.dumps({'got': got, 'warnings': warnings, 'topics': list_topics(sys.argv[1], salvage=False)}))
'''


def _read_limited(bag, limit=LIMIT):
    p = subprocess.run([sys.executable, '-c', _READ, str(bag), str(limit)], capture_output=True, text=True,
                       timeout=300, env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize('jitter_ns', [0, 3 * 10**6])
def test_a_bag_of_more_splits_than_open_files_reads_whole_in_time_order(tmp_path, jitter_ns):
    bag, files = _bag(tmp_path / 'bag', 120, jitter_ns)
    assert files >= 2 * LIMIT
    expected = [(m.topic, m.log_time_ns, m.data.hex()) for m in read_messages(bag)]   # no limit: rosbags, whole
    # rosbags reads a bag's files one after the other: time order within each (messages going back across splits
    # come out as recorded)
    assert len(expected) == 240 and ([t for _, t, _ in expected] == sorted(t for _, t, _ in expected)) == (not jitter_ns)
    out = _read_limited(bag)
    assert out['warnings'] == []
    assert [tuple(m) for m in out['got']] == expected
    assert out['topics'] == {'/cam/image': [IMAGE, 120], '/cam/info': [INFO, 120]}


def test_the_splits_are_opened_one_at_a_time_only_past_the_limit(tmp_path, monkeypatch):
    from vidseg_ros.data.bags import reader
    bag, files = _bag(tmp_path / 'bag', 20)
    monkeypatch.setattr(reader, '_open_files_left', lambda: reader._SPARE_FILES + files - 1)
    assert reader._splits_one_by_one(bag) == [bag / f'bag_{i}.mcap' for i in range(files)]   # metadata.yaml's order
    monkeypatch.setattr(reader, '_open_files_left', lambda: reader._SPARE_FILES + files)
    assert reader._splits_one_by_one(bag) is None      # they fit: one reader of the folder, as before
    assert reader._splits_one_by_one(bag / 'bag_0.mcap') is None


def test_list_topics_under_the_limit_counts_without_salvage(tmp_path):
    bag, _ = _bag(tmp_path / 'bag', 100)
    assert list_topics(bag, salvage=False) == {'/cam/image': (IMAGE, 100), '/cam/info': (INFO, 100)}
    assert _read_limited(bag)['topics'] == {'/cam/image': [IMAGE, 100], '/cam/info': [INFO, 100]}


def test_the_limit_is_left_as_it_was(tmp_path):
    bag, _ = _bag(tmp_path / 'bag', 10)
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert len(list(read_messages(bag))) == 20
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


@pytest.mark.parametrize('compression', [None, CompressionMode.MESSAGE])
def test_read_one_split_at_a_time_gives_what_the_whole_reader_gives(tmp_path, monkeypatch, compression):
    """Also for another writer's bag (rosbags') whose messages are each compressed: its metadata.yaml says so,
    which a lone split's reader does not know."""
    from vidseg_ros.data.bags import reader
    if compression is None:
        bag, _ = _bag(tmp_path / 'bag', 12, 3 * 10**6)
    else:
        bag = rosbag2(tmp_path / 'bag', [(10**9 + i, image_cdr(i)) for i in range(12)], compression=compression)
    def read(**kw):
        return [(m.topic, m.msgtype, m.log_time_ns, m.data) for m in read_messages(bag, **kw)]
    whole, found_whole = read(topics=['/cam/image']), {}
    window = read(start_ns=whole[3][2], stop_ns=whole[7][2], found=found_whole)
    assert len(whole) == 12 and 4 <= len(window) < 12
    monkeypatch.setattr(reader, '_open_files_left', lambda: 0)
    assert reader._splits_one_by_one(bag) is not None
    warnings, found = [], {}
    assert read(topics=['/cam/image'], warnings=warnings) == whole and warnings == []
    assert read(start_ns=whole[3][2], stop_ns=whole[7][2], found=found) == window and found == found_whole


def test_metadata_yaml_is_parsed_once_a_read_and_again_when_it_changes(tmp_path, monkeypatch):
    """The bounded YAML parse reads ~0.1 MB/s, and a read of a bag parsed its metadata.yaml three times (a bag of 2000
    splits: 8 s of a 17 s read)."""
    from vidseg_ros.data.bags import reader
    bag, _ = _bag(tmp_path / 'bag', 30)
    parsed = []
    real = reader.parse_yaml
    monkeypatch.setattr(reader, 'parse_yaml', lambda text, name: parsed.append(name) or real(text, name))
    assert len(list(read_messages(bag))) == 60 and len(parsed) == 1
    assert len(list(read_messages(bag))) == 60 and len(parsed) == 1
    text = (bag / 'metadata.yaml').read_text()
    (tmp_path / 'new.yaml').write_text(text.replace('message_count: 60', 'message_count: 61'))
    (tmp_path / 'new.yaml').replace(bag / 'metadata.yaml')   # as the recorder rewrites it: read again
    assert reader._metadata(bag)['rosbag2_bagfile_information']['message_count'] == 61 and len(parsed) == 2
