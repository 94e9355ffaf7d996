"""Damaged bags of other recorders (rosbag2's file compression, ``rosbag record``, the mcap library): what they
still hold, and warnings that name the file the user has."""
import re
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionMode
from rosbags.typesys import Stores, get_typestore

from support.bags import IMAGE, TS, rosbag2
from vidseg_ros.data.bags.reader import deserialize, read_messages

T = TS.types


def still_cdr(i: int, ns: int, h: int = 64, w: int = 64) -> bytes:
    """A frame of one grey level (i): zstd compresses it into real blocks (noise is stored raw)."""
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9),
                                      frame_id='cam')
    return TS.serialize_cdr(T[IMAGE](header=header, height=h, width=w, encoding='mono8', is_bigendian=0, step=w,
                                     data=np.full(h * w, i, np.uint8)), IMAGE)


def _read(path: Path, **kw) -> tuple[list[int], list[str]]:
    """(the grey level of each message read, the warnings)."""
    warnings: list[str] = []
    levels = [int(deserialize(m).data[0]) for m in read_messages(path, warnings=warnings, **kw)]
    return levels, warnings


@pytest.mark.parametrize('damage', ['cut', 'overwritten'])
def test_warnings_about_a_compressed_split_name_the_split_not_a_temporary_file(tmp_path, damage):
    # the split is decompressed into a temporary folder, and the warnings of its salvage named that file
    # ('/tmp/vidseg_unzstd_k3j2/drive.mcap: truncated at byte ...'), gone by then: which bag was damaged?
    bag = rosbag2(tmp_path / 'drive', [((i + 1) * 10**8, still_cdr(i, (i + 1) * 10**8)) for i in range(200)],
                  compression=CompressionMode.FILE)
    split = next(bag.glob('*.zstd'))
    data = bytearray(split.read_bytes())
    if damage == 'cut':
        del data[len(data) // 2:]
    else:
        data[len(data) // 2:len(data) // 2 + 8] = b'\xff' * 8
    split.write_bytes(bytes(data))
    for path in (bag, split):       # the bag folder, and the split given alone
        levels, warnings = _read(path)
        assert 0 < len(levels) < 200 and levels == list(range(len(levels)))
        assert warnings and all(w.startswith(str(split)) for w in warnings), warnings
        assert not any('vidseg_unzstd_' in w for w in warnings), warnings
        assert any(('cut short' if damage == 'cut' else 'damaged zstd stream') in w for w in warnings), warnings


def _lost_counted(warnings: list[str]) -> int:
    return sum(int(m.group(1)) for w in warnings for m in [re.search(r'(\d+) message row\(s\) lost', w)] if m)


def test_every_message_of_a_damaged_sqlite_bag_is_read_or_counted_lost(tmp_path):
    # 8 bytes overwritten in the cell pointers of one leaf page of the messages table: its rows are no longer found
    # by id ('rowid out of order'), and the salvage went past them in silence: 197 of 200 messages, no word of
    # the 3 missing
    rosbag2(tmp_path / 'drive', [((i + 1) * 10**8, still_cdr(i, (i + 1) * 10**8, 32, 32)) for i in range(200)],
            plugin='sqlite3')
    db = next((tmp_path / 'drive').glob('*.db3'))
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], 'big')
    leaves = [at for at in range(page, len(data), page) if data[at] == 0x0D]   # table b-tree leaf pages
    at = leaves[len(leaves) // 2] + 8       # its cell pointer array
    data[at:at + 8] = b'\xff' * 8
    db.write_bytes(bytes(data))
    levels, warnings = _read(tmp_path / 'drive')
    assert levels == sorted(levels) and len(set(levels)) == len(levels)
    assert 0 < len(levels) < 200 and len(levels) + _lost_counted(warnings) == 200, warnings


def test_a_sqlite_row_whose_data_reads_null_is_counted_lost_not_a_crash(tmp_path):
    # a flipped serial-type byte reads as NULL: bytes(None) raised TypeError out of the salvage, nothing read
    import sqlite3
    db = _sqlite_bag(tmp_path / 'drive')
    con = sqlite3.connect(db)      # the same row as on disk, written without the damage: NOT NULL dropped first
    con.execute('PRAGMA writable_schema = ON')
    con.execute("UPDATE sqlite_master SET sql = replace(sql, 'NOT NULL', '') WHERE name = 'messages'")
    con.commit()
    con.close()
    con = sqlite3.connect(db)
    con.execute('UPDATE messages SET data = NULL WHERE id = 4')
    con.commit()
    con.close()
    levels, warnings = _read(tmp_path / 'drive')
    assert levels == [0, 1, 2, 4, 5, 6, 7, 8, 9] and _lost_counted(warnings) == 1, warnings


ROS1 = get_typestore(Stores.ROS1_NOETIC)


def ros1_image(i: int) -> bytes:
    T1 = ROS1.types
    header = T1['std_msgs/msg/Header'](seq=i, stamp=T1['builtin_interfaces/msg/Time'](sec=i, nanosec=0),
                                       frame_id='cam')
    return ROS1.serialize_ros1(T1[IMAGE](header=header, height=8, width=8, encoding='mono8', is_bigendian=0, step=8,
                                         data=np.full(64, i, np.uint8)), IMAGE)


def _ros1_chunks(path: Path, n: int, compression: str | None) -> list[tuple[int, int]]:
    """A ROS 1 bag of ``n`` messages in chunks of a few (rosbags' writer); (byte offset, message count) of each of
    its chunks (the count from the index data record after it)."""
    from rosbags.rosbag1 import Writer as Ros1Writer
    w = Ros1Writer(path)
    w.chunk_threshold = 4 * len(ros1_image(0))
    if compression:
        w.set_compression(getattr(Ros1Writer.CompressionFormat, compression.upper()))
    w.open()
    conn = w.add_connection('/cam/image', IMAGE, typestore=ROS1)
    for i in range(n):
        w.write(conn, (i + 1) * 10**9, ros1_image(i))
    w.close()
    data, pos, chunks = path.read_bytes(), 13, []
    while pos < len(data):
        head = int.from_bytes(data[pos:pos + 4], 'little')
        fields = data[pos + 4:pos + 4 + head]
        if b'\x04\x00\x00\x00op=\x05' in fields:
            chunks.append((pos, 0))
        elif b'\x04\x00\x00\x00op=\x04' in fields and chunks:
            at = fields.index(b'count=') + 6
            chunks[-1] = (chunks[-1][0], chunks[-1][1] + int.from_bytes(fields[at:at + 4], 'little'))
        pos += 8 + head + int.from_bytes(data[pos + 4 + head:pos + 8 + head], 'little')
    return chunks


@pytest.mark.parametrize('compression', [None, 'bz2'])
@pytest.mark.parametrize('damage', ['header length', 'chunk size'])
def test_a_flipped_byte_in_a_ros1_chunk_header_costs_that_chunk_at_most(tmp_path, compression, damage):
    # the walk stopped at the first record that did not frame: a flipped byte in the 3rd of 14 chunk headers lost
    # the 34 messages from there on; a size field past the end of the file read that chunk only
    bag = tmp_path / 'drive.bag'
    chunks = _ros1_chunks(bag, 40, compression)
    assert len(chunks) > 5 and sum(n for _, n in chunks) == 40
    data = bytearray(bag.read_bytes())
    at, before = chunks[2][0], sum(n for _, n in chunks[:2])
    if damage == 'header length':
        data[at + 2] = 0x7f         # 8 MB of header
    else:
        head = int.from_bytes(data[at:at + 4], 'little')
        data[at + 4 + head:at + 8 + head] = (1 << 31).to_bytes(4, 'little')
    bag.write_bytes(bytes(data))
    levels, warnings = [], []
    for m in read_messages(bag, warnings=warnings):
        levels.append(int(deserialize(m).data[0]))
    lost = set(range(before, before + chunks[2][1])) if damage == 'header length' else set()
    assert levels == sorted(set(range(40)) - lost), warnings
    assert any(str(at) in w for w in warnings), warnings


@pytest.mark.parametrize('compression', ['zstd', 'lz4'])
def test_a_damaged_compressed_mcap_chunk_gives_the_messages_before_the_damage(tmp_path, compression):
    # the damaged chunk was decompressed 64 kB of input at a time: 8 bytes overwritten in the middle of a zstd
    # chunk of 200 still frames (6 kB compressed) lost every one of them ('0 message(s) read ... 200 skipped')
    from vidseg_ros.data.bags.writer import BagWriter, bag_qos_profile
    w = BagWriter(tmp_path / 'drive', compression=compression, chunk_size_bytes=4 << 20)
    w.add_topic('/cam/image', IMAGE, [bag_qos_profile()])
    for i in range(200):
        w.write('/cam/image', still_cdr(i, (i + 1) * 10**8), (i + 1) * 10**8)
    w.close()
    (split,) = w.files
    data = bytearray(split.read_bytes())
    at = 8      # after the magic: records of opcode (1 byte) and length (8), up to the one chunk
    while data[at] != 0x06:
        at += 9 + int.from_bytes(data[at + 1:at + 9], 'little')
    middle = at + 9 + int.from_bytes(data[at + 1:at + 9], 'little') // 2
    data[middle:middle + 8] = b'\xff' * 8
    split.write_bytes(bytes(data))
    levels, warnings = _read(tmp_path / 'drive')
    assert levels[:50] == list(range(50)), warnings      # the first quarter at least
    assert any('damaged' in w for w in warnings), warnings


def _sqlite_bag(path: Path, n: int = 10) -> Path:
    rosbag2(path, [((i + 1) * 10**8, still_cdr(i, (i + 1) * 10**8, 8, 8)) for i in range(n)], plugin='sqlite3')
    return next(path.glob('*.db3'))


def test_a_damaged_byte_in_a_sqlite_topic_name_costs_that_character_not_the_bag(tmp_path):
    # 'Could not decode to UTF-8 column name': 'cannot read the topic table; nothing salvaged', 0 of 10 messages
    db = _sqlite_bag(tmp_path / 'drive')
    db.write_bytes(db.read_bytes().replace(b'/cam/image', b'/cam/\xccmage'))
    warnings: list[str] = []
    got = list(read_messages(tmp_path / 'drive', warnings=warnings))
    assert [int(deserialize(m).data[0]) for m in got] == list(range(10)), warnings
    assert {m.topic for m in got} == {'/cam/\ufffdmage'}


def test_a_damaged_sqlite_schema_is_a_warning_not_a_unicode_error(tmp_path):
    # sqlite's 'malformed database schema' quotes the damaged bytes, and its message failed to decode: a
    # UnicodeDecodeError out of the salvage ("vidseg extract: error: 'utf-8' codec can't decode byte 0xcc ...")
    db = _sqlite_bag(tmp_path / 'drive')
    data = db.read_bytes()
    at = data.index(b'NOT NULL')
    db.write_bytes(data[:at + 6] + b'\xcc' + data[at + 7:])
    warnings: list[str] = []
    assert list(read_messages(tmp_path / 'drive', warnings=warnings)) == []
    assert any('cannot read the topic table (malformed database schema' in w for w in warnings), warnings
