"""Hostile strings from someone else's bag, end to end: `vidseg extract` and `vidseg bag-recover` run as
processes on real MCAP bags whose topic names are legal but whose header.frame_id, Image encoding and
CompressedImage format hold terminal escapes (erase screen, a title), CR, a forged '[ERROR]' log line and
100 kB of text. What they print, and the index they write, carry none of it raw and no line longer than a
few kB (a CompressedImage's format went raw into every row of index.csv: 100 kB a frame)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from vidseg_ros.data.bags.from_frames import TYPESTORE, BagFromFramesConfig, write_bag

HOSTILE = '\x1b[2J\x1b]0;owned\x07\rcam\n[ERROR] forged line\n' + 'A' * 100_000
LINE_LIMIT = 4000       # bytes: a few kB per line at most
T = TYPESTORE.types


def _header(i: int):
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i + 1, nanosec=0), frame_id=HOSTILE)


def _bag(path, topic: str, msgtype: str, messages) -> None:
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conn = w.add_connection(topic, msgtype, typestore=TYPESTORE)
    for i, msg in enumerate(messages):
        w.write(conn, (i + 1) * 10**9, TYPESTORE.serialize_cdr(msg, msgtype))
    w.close()


def _cut(bag, out):
    """The bag's MCAP cut at two thirds, without metadata.yaml (a recorder killed mid-write)."""
    out.mkdir()
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    (out / mcap.name).write_bytes(data[:len(data) * 2 // 3])
    return out


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('hostile')
    frames = [np.full((16, 24, 3), 30 * i, np.uint8) for i in range(4)]
    write_bag(root / 'frame_id', [frames], BagFromFramesConfig(frame_id=HOSTILE, topic='/cam/image_raw'))
    _bag(root / 'encoding', '/cam/image_raw', 'sensor_msgs/msg/Image', [
        T['sensor_msgs/msg/Image'](header=_header(i), height=16, width=24, encoding=HOSTILE, is_bigendian=0,
                                   step=72, data=np.zeros(16 * 72, np.uint8)) for i in range(3)])
    jpeg = cv2.imencode('.jpg', frames[2])[1].ravel()
    _bag(root / 'format', '/cam/image/compressed', 'sensor_msgs/msg/CompressedImage', [
        T['sensor_msgs/msg/CompressedImage'](header=_header(i), format='jpeg' + HOSTILE,
                                             data=jpeg if i != 1 else np.frombuffer(b'\x1b[2Jgarbage', np.uint8))
        for i in range(3)])
    for name in ('frame_id', 'encoding', 'format'):
        _cut(root / name, root / f'{name}_cut')
    return root


def _vidseg(cwd, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get('PYTHONPATH')])))
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, timeout=300)


def _clean(data: bytes, what: str) -> None:
    for n, line in enumerate(data.split(b'\n'), 1):
        assert not any(c in line for c in (b'\x1b', b'\r', b'\x07')), f'{what} line {n}: {line[:200]!r}'
        assert not line.lstrip().startswith(b'[ERROR]'), f'{what} line {n} is forged: {line[:200]!r}'
        assert len(line) <= LINE_LIMIT, f'{what} line {n}: {len(line)} bytes'


@pytest.mark.parametrize('name', ['frame_id', 'encoding', 'format', 'frame_id_cut', 'encoding_cut', 'format_cut'])
def test_extract_prints_and_indexes_no_hostile_text_raw(bags, tmp_path, name):
    r = _vidseg(tmp_path, 'extract', bags / name, '--out', tmp_path / 'ds')
    # nothing decodable in the 'encoding' bags: an error (exit 2), each frame's failure said quoted and cut
    assert r.returncode == (2 if name.startswith('encoding') else 0), r.stderr[-2000:]
    _clean(r.stdout, 'stdout')
    _clean(r.stderr, 'stderr')
    if name.startswith('encoding'):
        assert b'unsupported encoding' in r.stderr and b"\\x1b[2J" in r.stderr
        return
    index = (tmp_path / 'ds' / 'index.csv').read_bytes()
    _clean(index.replace(b'\r\n', b'\n'), 'index.csv')      # CSV rows end in CR LF
    assert len(index.splitlines()) >= 2
    if name.startswith('format'):
        assert b'jpeg\\x1b[2J' in index and b'characters)' in index      # escaped, cut, saying how long it was


@pytest.mark.parametrize('name', ['frame_id_cut', 'encoding_cut', 'format_cut', 'frame_id'])
def test_bag_recover_prints_no_hostile_text_raw(bags, tmp_path, name):
    r = _vidseg(tmp_path, 'bag-recover', bags / name, '--out', tmp_path / 'rec', '--force')
    assert r.returncode in (0, 2), r.stderr[-2000:]
    _clean(r.stdout, 'stdout')
    _clean(r.stderr, 'stderr')


def test_extract_keeping_compressed_bytes_indexes_the_format_escaped_and_cut(bags, tmp_path):
    r = _vidseg(tmp_path, 'extract', bags / 'format', '--out', tmp_path / 'ds', '--image-format', 'keep')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean(r.stdout + r.stderr, 'output')
    index = (tmp_path / 'ds' / 'index.csv').read_bytes()
    _clean(index.replace(b'\r\n', b'\n'), 'index.csv')
    # the second message's bytes are no image: counted as failed (ddffddc), not kept as a .jpg
    assert index.count(b'jpeg\\x1b[2J') == 2 and len(index) < 3000


def _mcap_with_hostile_records(folder):
    """An MCAP whose schema name, message encoding, channel metadata (offered_qos_profiles: rosbag2 stores YAML
    there) and library hold the hostile text; the image messages themselves are fine."""
    from mcap.writer import Writer as McapWriter
    from support.bags import image_cdr
    folder.mkdir()
    with open(folder / 'x.mcap', 'wb') as f:
        w = McapWriter(f)
        w.start(profile='ros2', library=HOSTILE)
        sid = w.register_schema(name='sensor_msgs/msg/Image' + HOSTILE, encoding='ros2msg', data=HOSTILE.encode())
        cid = w.register_channel(topic='/cam/image_raw', message_encoding='cdr' + HOSTILE, schema_id=sid,
                                 metadata={'offered_qos_profiles': HOSTILE})
        for i in range(3):
            w.add_message(channel_id=cid, log_time=(i + 1) * 10**9, data=image_cdr(i), publish_time=(i + 1) * 10**9)
        w.finish()
    return folder


def test_bag_recover_of_hostile_records_recovers_and_extract_says_it_in_short_lines(tmp_path):
    """offered_qos_profiles holding an ESC made the recovery fail after copying the messages ('unacceptable
    character #x001b'), without metadata.yaml; extract of such a bag logged the reader's error with the bag's
    100 kB serialization format in one line."""
    whole = _mcap_with_hostile_records(tmp_path / 'whole')
    cut = _cut(whole, tmp_path / 'cut')
    r = _vidseg(tmp_path, 'bag-recover', cut, '--out', tmp_path / 'rec', '--force')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean(r.stdout + r.stderr, 'bag-recover')
    assert b'offered_qos_profiles in the bag is not YAML' in r.stderr
    assert (tmp_path / 'rec' / 'metadata.yaml').is_file()
    r = _vidseg(tmp_path, 'extract', tmp_path / 'rec', '--out', tmp_path / 'ds')
    assert r.returncode in (0, 2)
    _clean(r.stdout + r.stderr, 'extract')
    assert b'regular reader failed' in r.stderr and b'characters)' in r.stderr


def test_bag_recover_escapes_a_hostile_file_name_in_its_report_and_errors(tmp_path, bags):
    """bag-recover printed its report and its errors with print(): a bag folder named with ESC and a line break
    (someone else's archive) drove the terminal and forged a line."""
    name = 'bag\x1b[2J\n[ERROR] forged'
    cut = _cut(bags / 'frame_id', tmp_path / name)
    r = _vidseg(tmp_path, 'bag-recover', cut, '--force')
    assert r.returncode == 0, r.stderr[-2000:]
    _clean(r.stdout + r.stderr, 'bag-recover')
    assert b'recovered bag: ' in r.stdout and b'\\x1b[2J\\n[ERROR]' in r.stdout
    r = _vidseg(tmp_path, 'bag-recover', cut, '--out', cut, '--force')      # refused: the error line too
    assert r.returncode == 2
    _clean(r.stdout + r.stderr, 'bag-recover error')
    assert r.stderr.count(b'\n') == 1 and b'\\x1b[2J' in r.stderr
