"""read_messages' topic and time filters on a bag read record by record (a killed recording: no summary) select what
they select on the intact bag (rosbags): start inclusive, stop exclusive, only the topics asked for, and ``found``
lists every topic. Written from survivors of a mutation run on reader.py (no test filtered a salvaged bag)."""
import shutil

from support.bags import IMAGE, INFO, image_cdr, info_cdr

from vidseg_ros.data.bags.reader import read_messages
from vidseg_ros.data.bags.writer import BagWriter


def _bags(tmp_path):
    """The same recording intact and killed (its file cut before the summary, no metadata.yaml)."""
    w = BagWriter(tmp_path / 'intact', chunk_size_bytes=2000, direct_io=False)
    w.add_topic('/cam/image', IMAGE)
    w.add_topic('/cam/camera_info', INFO)
    for i in range(20):
        w.write('/cam/image', image_cdr(i, 8, 8), 1000 + 10 * i)
        w.write('/cam/camera_info', info_cdr(i), 1005 + 10 * i)
    w.close()
    killed = tmp_path / 'killed'
    shutil.copytree(tmp_path / 'intact', killed)
    (killed / 'metadata.yaml').unlink()
    data = (killed / 'intact_0.mcap').read_bytes()
    (killed / 'intact_0.mcap').write_bytes(data[:data.rindex(b'\x0f')])   # before DataEnd: the summary gone
    return tmp_path / 'intact', killed


def _read(bag, **kw):
    warnings, found = [], {}
    got = [(m.topic, m.log_time_ns) for m in read_messages(bag, warnings=warnings, found=found, **kw)]
    return got, found, warnings


def test_the_filters_select_alike_whole_or_salvaged(tmp_path):
    intact, killed = _bags(tmp_path)
    assert _read(killed)[2]        # read record by record, said
    for kw in ({'topics': ['/cam/image']}, {'start_ns': 1050, 'stop_ns': 1100},
               {'topics': ['/cam/camera_info'], 'start_ns': 1045, 'stop_ns': 1095}, {'start_ns': 1195}):
        whole, found_whole, _ = _read(intact, **kw)
        salvaged, found, _ = _read(killed, **kw)
        assert salvaged == whole and whole, kw
        assert found == found_whole == {'/cam/image': IMAGE, '/cam/camera_info': INFO}
    got, _, _ = _read(killed, start_ns=1050, stop_ns=1100)
    assert got[0] == ('/cam/image', 1050) and got[-1] == ('/cam/camera_info', 1095)   # [start, stop)
    assert _read(killed, topics=['/cam/image'])[0] == [('/cam/image', 1000 + 10 * i) for i in range(20)]
