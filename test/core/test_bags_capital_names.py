"""A bag file named in capitals (DRIVE.BAG, DRIVE.MCAP, DRIVE.DB3: copied from a FAT card) reads as its lower-case
twin: whole, in time order, with no word of damage."""
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from support.bags import IMAGE, TS
from vidseg_ros.data.bags.reader import deserialize, list_topics, read_messages

ROS1 = get_typestore(Stores.ROS1_NOETIC)
ORDER = (2, 0, 3, 1, 4)     # written out of time order: the regular reader sorts, the salvage does not


def _image(store, i: int):
    T = store.types
    stamp = T['builtin_interfaces/msg/Time'](sec=i, nanosec=0)
    header = (T['std_msgs/msg/Header'](seq=i, stamp=stamp, frame_id='cam') if store is ROS1 else
              T['std_msgs/msg/Header'](stamp=stamp, frame_id='cam'))
    return T[IMAGE](header=header, height=2, width=2, encoding='mono8', is_bigendian=0, step=2,
                    data=np.full(4, i, np.uint8))


def _bag(path: Path, storage: str) -> Path:
    """One file of ``storage`` (ros1, mcap, sqlite3) named drive.<suffix>, the frames written in ORDER."""
    if storage == 'ros1':
        from rosbags.rosbag1 import Writer as Ros1Writer
        w = Ros1Writer(path / 'drive.bag')
        w.open()
        conn = w.add_connection('/cam/image', IMAGE, typestore=ROS1)
        for i in ORDER:
            w.write(conn, (i + 1) * 10**9, ROS1.serialize_ros1(_image(ROS1, i), IMAGE))
        w.close()
        return path / 'drive.bag'
    w = Writer(path / 'folder', version=9,
               storage_plugin=StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3)
    w.open()
    conn = w.add_connection('/cam/image', IMAGE, typestore=TS)
    for i in ORDER:
        w.write(conn, (i + 1) * 10**9, TS.serialize_cdr(_image(TS, i), IMAGE))
    w.close()
    (file,) = [f for f in (path / 'folder').iterdir() if f.name != 'metadata.yaml']
    return file.rename(path / f'drive{file.suffix}')


@pytest.mark.parametrize('storage', ['ros1', 'mcap', 'sqlite3'])
def test_a_bag_file_named_in_capitals_reads_as_its_lower_case_twin(tmp_path, storage):
    # 'regular reader failed after 0 messages (AnyReaderError: Unrecognized storage format '.BAG'); salvaging the
    # rest record by record': the frames in file order (2, 0, 3, 1, 4), an intact bag reported as damaged
    lower = _bag(tmp_path, storage)
    upper = lower.rename(tmp_path / lower.name.upper())
    warnings: list[str] = []
    got = list(read_messages(upper, warnings=warnings))
    assert [int(deserialize(m).data[0]) for m in got] == [0, 1, 2, 3, 4] and not warnings, warnings
    assert {m.bag for m in got} == {str(upper)}
    assert list_topics(upper, salvage=False) == {'/cam/image': (IMAGE, 5)}
