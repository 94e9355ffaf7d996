"""recorder_node stopped before its first message: the bag holds an empty `<bag>_0.mcap` with the subscribed topics'
schemas and channels, listed in metadata.yaml, as rosbag2 leaves it (it opens that file at start). Before, the
folder held metadata.yaml alone, listing no file: rosbags and mcap found no file to open, bag-recover said 'not a
bag'."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from mcap.reader import make_reader  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
sys.path.insert(0, str(Path(__file__).parent))
from test_recorder import node, only_bag, start_recorder, stop_cleanly, wait_matched  # noqa: E402,F401

from vidseg_ros.data.bags.reader import read_messages  # noqa: E402


def test_stopped_before_the_first_message_leaves_an_empty_listed_file(node, tmp_path):  # noqa: F811
    pubs = [node.create_publisher(Image, '/empty/image', QoSProfile(depth=5)),
            node.create_publisher(CameraInfo, '/empty/camera_info', QoSProfile(depth=5))]
    proc = start_recorder(tmp_path, 'topics:=[/empty/image,/empty/camera_info,/empty/never_published]')
    try:
        wait_matched(node, pubs, proc)
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()
    bag = only_bag(tmp_path)
    first = f'{bag.name}_0.mcap'
    assert {p.name for p in bag.iterdir()} == {first, 'metadata.yaml'}
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['relative_file_paths'] == [first] and info['message_count'] == 0
    topics = {t['topic_metadata']['name']: t['topic_metadata']['type'] for t in info['topics_with_message_count']}
    expected = {'/empty/image': 'sensor_msgs/msg/Image', '/empty/camera_info': 'sensor_msgs/msg/CameraInfo'}
    assert topics == expected     # the topic nobody published is not known: not in the bag
    with open(bag / first, 'rb') as f:
        summary = make_reader(f).get_summary()
    assert summary.statistics.message_count == 0
    assert {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()} == expected
    assert all(c.metadata['offered_qos_profiles'] for c in summary.channels.values())   # the publishers' QoS
    with AnyReader([bag]) as reader:
        assert reader.message_count == 0 and {c.topic for c in reader.connections} == set(expected)
    warnings, found = [], {}
    assert list(read_messages(bag, warnings=warnings, found=found)) == [] and warnings == [] and found == expected
    p = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', str(bag)], capture_output=True,
                       text=True, timeout=120, env=os.environ)
    assert (p.returncode, p.stderr) == (0, '') and 'every file is complete; nothing to do' in p.stdout
