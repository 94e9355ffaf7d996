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
            if splits % 8 == 1:
                monkeypatch.undo()
                assert (bag / 'metadata.yaml').read_text() == _from_summaries(bag, closed)
                reads = _counting(monkeypatch)
            reads['yaml_chars'] = 0
    w.close()
    assert (reads['summaries'], reads['opens']) == (0, 0)
    monkeypatch.undo()
    assert len(w.files) > 30
    # what a split serializes does not grow with the files before it (each file's lines are rendered once)
    late = [n for three_topics, n in dumped if three_topics]
    assert len(late) > 30 and max(late[-10:]) < 1.05 * min(late[:10]), dumped
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
