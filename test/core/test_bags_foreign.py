"""extract on bags written by other recorders than ours (rosbags' writers, the mcap library): every frame, in
order, or one clear error; never a silent empty result."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from support.bags import IMAGE, TS
from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.data.datasets.layouts import read_index

COMPRESSED = 'sensor_msgs/msg/CompressedImage'
T = TS.types


def _header(ns: int):
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9),
                                    frame_id='cam')


def _frame(i: int) -> np.ndarray:
    """An 8x12 RGB frame whose first pixel says its number (red = i)."""
    rgb = np.full((8, 12, 3), 40, np.uint8)
    rgb[0, 0] = (i, 0, 0)
    return rgb


def raw_cdr(i: int, ns: int) -> bytes:
    return TS.serialize_cdr(T[IMAGE](header=_header(ns), height=8, width=12, encoding='rgb8', is_bigendian=0,
                                     step=36, data=_frame(i).ravel()), IMAGE)


def compressed_cdr(ns: int, fmt: str, payload: bytes) -> bytes:
    return TS.serialize_cdr(T[COMPRESSED](header=_header(ns), format=fmt, data=np.frombuffer(payload, np.uint8)),
                            COMPRESSED)


def rosbag2(path: Path, messages, plugin: str = 'mcap', compression: CompressionMode | None = None,
            msgtype: str = IMAGE) -> Path:
    """A rosbag2 bag written by rosbags of ``messages`` ((log time, CDR bytes), one topic)."""
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if plugin == 'mcap' else StoragePlugin.SQLITE3)
    if compression is not None:
        w.set_compression(compression, CompressionFormat.ZSTD)
    w.open()
    conn = w.add_connection('/cam/image', msgtype, typestore=TS)
    for t, data in messages:
        w.write(conn, t, data)
    w.close()
    return path


def frames_of(out: Path) -> list[int]:
    """The frame numbers of the extracted dataset at ``out``, in index order."""
    return [int(cv2.imread(str(r.image))[0, 0, 2]) for r in read_index(out)]


def test_every_frame_undecodable_is_an_error_not_an_empty_success(tmp_path):
    # a WebP stream: 'neither PNG nor JPEG' for each frame; extract returned 0 written (exit 0) with only warnings
    webp = cv2.imencode('.webp', _frame(1))[1].tobytes()
    bag = rosbag2(tmp_path / 'bag', [((i + 1) * 10**8, compressed_cdr((i + 1) * 10**8, 'webp', webp))
                                     for i in range(5)], msgtype=COMPRESSED)
    with pytest.raises(ValueError, match=r'no frame extracted: all 5 frame\(s\) failed to decode; the first: .*'
                                         r'neither PNG nor JPEG'):
        extract([bag], tmp_path / 'out')
    assert not (tmp_path / 'out' / 'index.csv').exists()
