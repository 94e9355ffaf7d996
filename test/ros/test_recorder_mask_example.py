"""The shipped example that adds the segmenter's masks to a recording (docs/recorder.md, the command
without launch) records its own robot's masks only: run as written, under robot1 beside robot2, and
in the root namespace of the default single-robot launch.
Found: the example was `-p topic_regex:='/vidseg_segmenter/mask$'`; topic_regex sees the whole graph,
so robot1's recorder recorded robot2's masks (and the root namespace's) too."""
from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from support.paths import ROOT  # noqa: E402

MASKS = {'': '/vidseg_segmenter/mask', 'robot1': '/robot1/vidseg_segmenter/mask',
         'robot2': '/robot2/vidseg_segmenter/mask'}


def documented_command() -> list[str]:
    """The `python -m vidseg_ros.ros.recorder_node` command of docs/recorder.md's usage, as arguments."""
    text = (ROOT / 'docs' / 'recorder.md').read_text()
    block = re.search(r'^python -m vidseg_ros\.ros\.recorder_node .*?(?<!\\)\n', text, re.M | re.S)
    assert block, 'docs/recorder.md has no python -m vidseg_ros.ros.recorder_node command'
    command = ' '.join(line.split('  #')[0].rstrip(' \\') for line in block.group(0).splitlines())
    args = shlex.split(command)
    assert args[:3] == ['python', '-m', 'vidseg_ros.ros.recorder_node'] and 'also record the masks' in block.group(0)
    return [sys.executable, *args[1:]]


def recorder(namespace: str, out, log) -> subprocess.Popen:
    """The documented command with only the bag folder changed, in ``namespace`` ('' = the root)."""
    args = [a.replace('config/recorder.yaml', str(ROOT / 'config' / 'recorder.yaml')) for a in documented_command()]
    args = [re.sub(r'^output_dir:=.*', f'output_dir:={out}', a) for a in args]
    args += ['-p', 'min_free_disk_bytes:=0', '-p', 'discovery_period_s:=0.2']
    if namespace:
        args += ['-r', f'__ns:=/{namespace}']
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))


def recorded_topics(folder) -> set[str]:
    (bag,) = folder.glob('vidseg_*')
    with AnyReader([bag]) as reader:
        return {c.topic for c in reader.connections if c.msgcount}


def test_the_documented_mask_recording_stays_in_its_namespace(probe, tmp_path):
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {ns: probe.node.create_publisher(Image, topic, reliable) for ns, topic in MASKS.items()}
    log = open(tmp_path / 'recorders.log', 'w')
    procs = {ns: recorder(ns, tmp_path / (ns or 'root'), log) for ns in ('robot1', '')}
    try:
        for ns in procs:   # each recorder subscribes its own masks ...
            probe.wait_for_subscribers(pubs[ns], timeout=60)
        time.sleep(1.0)    # ... and would have subscribed the others by now (discovery every 0.2 s)
        mask = Image(height=4, width=4, encoding='mono8', step=4, data=np.zeros(16, np.uint8).tobytes())
        for _ in range(10):
            for pub in pubs.values():
                pub.publish(mask)
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=90) for proc in procs.values()]
        log.close()
    output = (tmp_path / 'recorders.log').read_text()
    assert codes == [0, 0], output[-3000:]
    assert recorded_topics(tmp_path / 'robot1') == {MASKS['robot1']}, output[-3000:]
    assert recorded_topics(tmp_path / 'root') == {MASKS['']}, output[-3000:]
