"""ROS 1 salvage (a bag without its index) of message records whose fields are damaged: the record is skipped, the
messages around it are read. A `conn` field of 2 bytes raised struct.error out of the salvage."""
import struct

from vidseg_ros.data.bags.salvage_ros1 import CONNECTION, MAGIC, MSG_DATA, salvage_ros1


def _field(name: str, value: bytes) -> bytes:
    text = name.encode() + b'=' + value
    return struct.pack('<I', len(text)) + text


def _record(header: dict[str, bytes], data: bytes) -> bytes:
    head = b''.join(_field(k, v) for k, v in header.items())
    return struct.pack('<I', len(head)) + head + struct.pack('<I', len(data)) + data


def _message(conn: bytes, sec: int, payload: bytes) -> bytes:
    return _record({'op': bytes([MSG_DATA]), 'conn': conn, 'time': struct.pack('<II', sec, 0)}, payload)


def test_a_message_whose_conn_field_is_cut_is_skipped_not_the_salvage(tmp_path):
    connection = _record({'op': bytes([CONNECTION]), 'conn': struct.pack('<I', 0), 'topic': b'/cam'},
                         _field('type', b'std_msgs/String') + _field('topic', b'/cam'))
    bag = tmp_path / 'cut.bag.active'
    bag.write_bytes(MAGIC + connection + _message(struct.pack('<I', 0), 1, b'first')
                    + _message(b'\x00\x00', 2, b'damaged') + _message(struct.pack('<I', 0), 3, b'third'))
    warnings = []
    got = [(conn.topic, ns, data) for conn, ns, data in salvage_ros1(bag, warnings.append)]
    assert got == [('/cam', 1_000_000_000, b'first'), ('/cam', 3_000_000_000, b'third')], warnings
