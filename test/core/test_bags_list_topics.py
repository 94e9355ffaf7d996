"""list_topics counts a topic's messages over all its connections: a ROS 1 bag has one connection per publisher of a
topic (and an MCAP file may hold two channels of one topic), and the count of the last one was the topic's."""
from mcap.writer import Writer as McapWriter
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_typestore

from vidseg_ros.data.bags.reader import list_topics, read_messages

TS = get_typestore(Stores.ROS1_NOETIC)
STRING = 'std_msgs/msg/String'


def test_a_ros1_topic_of_two_publishers_counts_the_messages_of_both(tmp_path):
    bag = tmp_path / 'two.bag'
    data = bytes(TS.serialize_ros1(TS.types[STRING](data='x'), STRING))
    with Ros1Writer(bag) as w:
        a = w.add_connection('/chat', STRING, typestore=TS, callerid='/a')
        b = w.add_connection('/chat', STRING, typestore=TS, callerid='/b')
        for i in range(5):
            w.write(a, 10 + i, data)
        for i in range(2):
            w.write(b, 100 + i, data)
    assert len(list(read_messages(bag))) == 7
    assert list_topics(bag, salvage=False) == {'/chat': (STRING, 7)}    # the old code: 2, publisher /b's


def test_an_mcap_topic_of_two_channels_counts_the_messages_of_both(tmp_path):
    ros2 = get_typestore(Stores.ROS2_HUMBLE)
    data = bytes(ros2.serialize_cdr(ros2.types[STRING](data='x'), STRING))
    path = tmp_path / 'two.mcap'
    with open(path, 'wb') as f:
        w = McapWriter(f)
        w.start(profile='ros2', library='test')
        schema = w.register_schema(STRING, 'ros2msg', b'string data\n')
        channels = [w.register_channel('/chat', 'cdr', schema, {'offered_qos_profiles': '', 'publisher': p})
                    for p in 'ab']
        for i, channel in enumerate([channels[0]] * 4 + [channels[1]] * 3):
            w.add_message(channel, log_time=10 + i, data=data, publish_time=10 + i)
        w.finish()
    assert len(list(read_messages(path))) == 7
    assert list_topics(path, salvage=False) == {'/chat': (STRING, 7)}
