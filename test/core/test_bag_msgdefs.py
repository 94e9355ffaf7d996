"""The message definitions a bag carries for types of the user's own packages: complete, so that tools without those
packages decode the bag."""
import logging
import os
import sys

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vidseg_ros.data.bags.msgdefs import message_definition
from vidseg_ros.data.bags.writer import BagWriter, bag_qos_profile

BOX = '# a box\nint32 x  # left edge\nint32 y\nuint8 KIND_A=1\nstring<=8 label "none"\n'
DETECTION = ('std_msgs/Header header\nBox[] boxes\nBox best\ngeometry_msgs/Point center\nBox[<=4] few\n'
             'float64[3] v\n')


@pytest.fixture
def overlay(tmp_path, monkeypatch):
    """A workspace overlay holding package my_msgs as ROS 2 before Iron installs it: .msg files, no .json."""
    msg = tmp_path / 'overlay' / 'share' / 'my_msgs' / 'msg'
    msg.mkdir(parents=True)
    (msg / 'Box.msg').write_text(BOX)
    (msg / 'Detection.msg').write_text(DETECTION)
    monkeypatch.setenv('AMENT_PREFIX_PATH', os.pathsep.join([str(tmp_path / 'overlay'), sys.prefix]))
    message_definition.cache_clear()
    yield
    message_definition.cache_clear()


def _detection() -> tuple[object, bytes]:
    ts = get_typestore(Stores.LATEST)
    ts.register(get_types_from_msg(BOX, 'my_msgs/msg/Box'))
    ts.register(get_types_from_msg(DETECTION, 'my_msgs/msg/Detection'))
    T = ts.types
    box = T['my_msgs/msg/Box']
    header = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='cam')
    msg = T['my_msgs/msg/Detection'](header=header, boxes=[box(x=1, y=2, label='a'), box(x=3, y=4, label='b')],
                                     best=box(x=5, y=6, label='c'),
                                     center=T['geometry_msgs/msg/Point'](x=1., y=2., z=3.), few=[box(x=7, y=8, label='d')], v=np.array([1., 2., 3.]))
    return msg, ts.serialize_cdr(msg, 'my_msgs/msg/Detection')


def test_a_custom_type_without_its_type_description_is_recorded_with_its_whole_definition(tmp_path, overlay,
                                                                                           caplog):
    # installed without a .json (no type hash): 'no message definition for my_msgs/msg/Detection; recording it
    # without one' was logged, though the definition was found and recorded
    text, type_hash = message_definition('my_msgs/msg/Detection')
    assert text.startswith(DETECTION) and type_hash == ''
    deps = ('my_msgs/msg/Box', 'std_msgs/msg/Header', 'builtin_interfaces/msg/Time', 'geometry_msgs/msg/Point')
    assert text.count('MSG: ') == 4 and all(text.count(f'MSG: {t}\n') == 1 for t in deps), text
    msg, data = _detection()
    with caplog.at_level(logging.WARNING):
        w = BagWriter(tmp_path / 'bag')
        w.add_topic('/detections', 'my_msgs/msg/Detection', [bag_qos_profile()])
        w.write('/detections', data, 10**9)
        w.close()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    with AnyReader([tmp_path / 'bag']) as reader:      # no typestore that knows my_msgs: the bag's definitions
        ((conn, _, raw),) = list(reader.messages())
        got = reader.deserialize(raw, conn.msgtype)
    assert [(b.x, b.y, b.label) for b in got.boxes] == [(1, 2, 'a'), (3, 4, 'b')]
    assert (got.best.label, got.center.z, got.few[0].y, list(got.v)) == ('c', 3.0, 8, [1., 2., 3.])
    with open(w.files[0], 'rb') as f:
        ((*_, decoded),) = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert decoded.header.stamp.nanosec == 2 and [b.label for b in decoded.boxes] == ['a', 'b']


def test_a_type_no_source_knows_is_recorded_without_definition_and_said_so(tmp_path, overlay, caplog):
    (tmp_path / 'overlay' / 'share' / 'my_msgs' / 'msg' / 'Box.msg').unlink()      # a dependency not installed
    with caplog.at_level(logging.WARNING):
        assert message_definition('my_msgs/msg/Detection') == ('', '')
    assert [r.getMessage().split(' (')[0] for r in caplog.records] == [
        'no message definition for my_msgs/msg/Detection']
    _, data = _detection()
    w = BagWriter(tmp_path / 'bag')
    w.add_topic('/detections', 'my_msgs/msg/Detection', [bag_qos_profile()])
    w.write('/detections', data, 10**9)
    w.close()
    with open(w.files[0], 'rb') as f:       # playable by ROS, which has the type: the messages are all there
        ((schema, channel, message),) = list(make_reader(f).iter_messages())
    assert (schema.name, schema.data, channel.topic, message.data) == ('my_msgs/msg/Detection', b'', '/detections',
                                                                      data)
