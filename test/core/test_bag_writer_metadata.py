"""metadata.yaml from the writer's memory: a split reads no earlier file, and the result is what the files' own
summaries give (the way it was built before, still used by bag-recover)."""
import yaml
from support.bags import IMAGE, INFO, image_cdr, info_cdr

from vidseg_ros.data.bags import writer as writer_module
from vidseg_ros.data.bags.writer import BagWriter, bag_metadata, bag_qos_profile


def _counting(monkeypatch):
    """Count the MCAP summaries read and the files opened for reading by the writer module, and the
    characters it dumps as YAML."""
    reads = {'summaries': 0, 'opens': 0, 'yaml_chars': 0}
    real_reader = writer_module.make_reader
    real_dump = yaml.safe_dump

    def safe_dump(*args, **kwargs):
        text = real_dump(*args, **kwargs)
        reads['yaml_chars'] += len(text)
        return text

    def make_reader(*args, **kwargs):
        reads['summaries'] += 1
        return real_reader(*args, **kwargs)

    def opener(*args, **kwargs):
        reads['opens'] += 1
        return open(*args, **kwargs)
    monkeypatch.setattr(writer_module, 'make_reader', make_reader)
    monkeypatch.setattr(writer_module, 'open', opener, raising=False)
    monkeypatch.setattr(writer_module.yaml, 'safe_dump', safe_dump)
    return reads


def _from_summaries(bag, files):
    return yaml.safe_dump(bag_metadata(bag, files, 'zstd'), default_flow_style=False, sort_keys=False)


def test_split_reads_no_earlier_file_and_metadata_matches_the_summaries(tmp_path, monkeypatch):
    bag = tmp_path / 'bag'
    w = BagWriter(bag, compression='zstd', chunk_size_bytes=2000, max_bag_size_bytes=3000)
    w.add_topic('/cam/image', IMAGE, [bag_qos_profile()])
    w.add_topic('/never', INFO, [bag_qos_profile(depth=3)])    # registered in every file, no message
    reads = _counting(monkeypatch)
    splits, dumped = 0, []
    for i in range(150):
        if i == 40:
            w.add_topic('/cam/camera_info', INFO, [bag_qos_profile(depth=10)])   # from the middle of a file on
        t = 1_000_000_000 + i * 1000 - (500_000 if i % 7 == 3 else 0)     # log times not in order
        w.write('/cam/image', image_cdr(i), t)
        if i >= 40:
            w.write('/cam/camera_info', info_cdr(i), t + 10)
        if w.current_path is None or len(w.files) - 1 > splits:    # a file was closed: metadata.yaml rewritten
            splits = len(w.files) - 1
            assert (reads['summaries'], reads['opens']) == (0, 0), f'split {splits} read earlier files: {reads}'
            dumped.append((i >= 40, reads['yaml_chars']))
            closed = w.files[:-1] if w.current_path is not None else w.files
            monkeypatch.undo()
            text = (bag / 'metadata.yaml').read_text()
            listed = yaml.safe_load(text)['rosbag2_bagfile_information']['relative_file_paths']
            assert listed == [f.name for f in closed[:len(listed)]]      # the first files closed
            assert len(closed) == len(listed) or 16 * (len(closed) - len(listed)) < len(listed)   # at most 1/16 behind
            if splits % 8 == 1:
                assert text == _from_summaries(bag, closed[:len(listed)])
            reads = _counting(monkeypatch)
            reads['yaml_chars'] = 0
    w.close()
    assert (reads['summaries'], reads['opens']) == (0, 0)
    monkeypatch.undo()
    assert len(w.files) > 30
    # what a split serializes does not grow with the files before it (each file's lines are rendered once)
    late = [n for three_topics, n in dumped if three_topics]
    assert len(late) > 30 and max(late[-10:]) < 1.05 * max(late[:10]), dumped
    text = (bag / 'metadata.yaml').read_text()
    assert text == _from_summaries(bag, w.files)
    meta = yaml.safe_load(text)['rosbag2_bagfile_information']
    counts = {t['topic_metadata']['name']: t['message_count'] for t in meta['topics_with_message_count']}
    assert counts == {'/cam/image': 150, '/never': 0, '/cam/camera_info': 110}
    assert meta['relative_file_paths'] == [p.name for p in w.files] and not (bag / 'metadata.yaml.tmp').exists()


def test_close_without_messages_and_after_a_split(tmp_path):
    bag = tmp_path / 'bag'
    w = BagWriter(bag)
    w.add_topic('/cam/image', IMAGE)
    w.write('/cam/image', image_cdr(0), 5)
    w.split()
    w.add_topic('/late', INFO)    # no file opened after it: not in the metadata, as the files say
    w.close()
    assert (bag / 'metadata.yaml').read_text() == yaml.safe_dump(bag_metadata(bag), default_flow_style=False,
                                                                 sort_keys=False)
    empty = BagWriter(tmp_path / 'empty')
    empty.close()    # an empty file, listed, as rosbag2 leaves a bag that recorded nothing
    text = (tmp_path / 'empty' / 'metadata.yaml').read_text()
    meta = yaml.safe_load(text)['rosbag2_bagfile_information']
    assert meta['relative_file_paths'] == ['empty_0.mcap'] and meta['message_count'] == 0
    assert text == yaml.safe_dump(bag_metadata(tmp_path / 'empty'), default_flow_style=False, sort_keys=False)


def _splits(w, n, topics=('/cam/image',)):
    for i in range(n):
        for topic in topics:
            w.write(topic, image_cdr(i), 10**9 + i * 10**9)
        w.split()


def test_metadata_rewrites_add_up_to_a_few_times_its_final_size(tmp_path, monkeypatch):
    """metadata.yaml was rewritten whole at every split: 4000 1 s splits wrote 1.3 GB of it (80 MB at 1000, growing
    with the square of the splits). Now the rewrites add up to ~17 times its final size."""
    written = []
    real = writer_module._write_text
    monkeypatch.setattr(writer_module, '_write_text', lambda d, text: written.append(len(text)) or real(d, text))
    w = BagWriter(tmp_path / 'bag', direct_io=False)
    w.add_topic('/cam/image', IMAGE, [bag_qos_profile()])
    _splits(w, 600)
    w.close()
    final = (tmp_path / 'bag' / 'metadata.yaml').stat().st_size
    assert written[-1] == final and len(yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())[
        'rosbag2_bagfile_information']['relative_file_paths']) == 600
    assert sum(written) < 20 * final, (sum(written), final)      # rewritten at every split: ~300 times
    assert len(written) < 100


def test_a_busy_recording_lists_its_splits_at_once(tmp_path):
    """Splits holding 100 times metadata.yaml's size in data are listed as they close."""
    w = BagWriter(tmp_path / 'bag', direct_io=False)
    w.add_topic('/cam/image', IMAGE)
    for i in range(40):
        w.write('/cam/image', image_cdr(i, 480, 640), 10**9 + i * 10**9)    # 920 kB a split
        w.split()
        listed = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        assert len(listed['relative_file_paths']) == i + 1


def test_a_killed_recording_reads_whole_with_its_list_behind(tmp_path):
    """Killed with metadata.yaml listing some closed splits only: the readers read the others after them, bag-recover
    lists them all."""
    import os

    from vidseg_ros.data.bags.reader import read_messages
    from vidseg_ros.data.bags.recover import recover_bag
    w = BagWriter(tmp_path / 'bag', chunk_size_bytes=1000, direct_io=False)
    w.add_topic('/cam/image', IMAGE)
    _splits(w, 200)
    w.write('/cam/image', image_cdr(200), 201 * 10**9)
    w.flush()                                   # the split being written when the recorder is killed
    listed = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert 180 < len(listed['relative_file_paths']) < 200
    os.truncate(w.current_path, os.path.getsize(w.current_path))   # as SIGKILL leaves it: no summary
    warnings = []
    got = [m.log_time_ns for m in read_messages(tmp_path / 'bag', warnings=warnings)]
    assert got == [10**9 + i * 10**9 for i in range(201)]
    assert 'bag_199.mcap, bag_200.mcap not listed in its metadata.yaml' in warnings[0], warnings
    report = recover_bag(tmp_path / 'bag', force=True)
    recovered = yaml.safe_load((report.out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert len(recovered['relative_file_paths']) == 201 and recovered['message_count'] == 201
    after = []
    assert [m.log_time_ns for m in read_messages(report.out, warnings=after)] == got and after == []
