"""Tiny bag payloads and readers shared by the bag, recorder and recovery tests."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.LATEST)
IMAGE, INFO = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo'


def image_cdr(i: int, h: int = 16, w: int = 24) -> bytes:
    T = TS.types
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i, nanosec=0), frame_id='cam')
    data = (np.arange(h * w * 3, dtype=np.uint32) + i).astype(np.uint8)
    return TS.serialize_cdr(T[IMAGE](header=header, height=h, width=w, encoding='rgb8', is_bigendian=0,
                                     step=w * 3, data=data), IMAGE)


def info_cdr(i: int) -> bytes:
    T = TS.types
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i, nanosec=0), frame_id='cam')
    roi = T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return TS.serialize_cdr(T[INFO](header=header, height=16, width=24, distortion_model='plumb_bob',
                                    d=np.zeros(5), k=np.eye(3).ravel(), r=np.eye(3).ravel(),
                                    p=np.zeros(12), binning_x=0, binning_y=0, roi=roi), INFO)


def read_rosbags(paths):
    with AnyReader([Path(p) for p in paths], default_typestore=TS) as reader:
        return [(c.topic, bytes(raw)) for c, _, raw in reader.messages()]


def read_mcap(path):
    out = []
    with open(path, 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            assert decoded.header.frame_id == 'cam'
            out.append((channel.topic, bytes(message.data)))
    return out


def mount_tmpfs(path: Path, size_mb: int, kind: str = 'tmpfs') -> None:
    """Mount a small file system at ``path`` or skip the test with the reason.

    ``tmpfs`` (page cache only), or ``ext4`` on a loop device (an image file next to ``path``):
    there the recorder writes with O_DIRECT and the reserve is a real ``fallocate``.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip('mounting a small file system needs root')
    if kind == 'tmpfs':
        command = ['mount', '-t', 'tmpfs', '-o', f'size={size_mb}m', 'tmpfs', str(path)]
    else:
        image = path.with_name(path.name + '.img')
        with open(image, 'wb') as f:
            f.truncate(size_mb << 20)
        made = subprocess.run(['mkfs.ext4', '-q', '-F', str(image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f'cannot make an ext4 image here: {made.stderr.strip()}')
        command = ['mount', '-o', 'loop', str(image), str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f'cannot mount a {kind} here: {result.stderr.strip()}')


def mono8_bag(path, topics, plugin: str = 'mcap', frames: int = 3):
    """A rosbag2 bag of ``frames`` 8x8 mono8 Images on each of ``topics`` (any names: hostile ones too), one
    per second from t = 1 s; ``plugin`` 'mcap' or 'sqlite3'."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    T = TS.types
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if plugin == 'mcap' else StoragePlugin.SQLITE3)
    w.open()
    conns = [w.add_connection(t, IMAGE, typestore=TS) for t in topics]
    for i in range(frames):
        header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i + 1, nanosec=0),
                                          frame_id='cam')
        msg = T[IMAGE](header=header, height=8, width=8, encoding='mono8', is_bigendian=0, step=8,
                       data=np.full(64, 20 * i, np.uint8))
        for c in conns:
            w.write(c, (i + 1) * 10**9, TS.serialize_cdr(msg, IMAGE))
    w.close()
    return path


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
