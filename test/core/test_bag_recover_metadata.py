"""bag-recover of a bag whose files are all complete but whose metadata.yaml is not: a recorder killed while it closed
(after its last split, before metadata.yaml was written again: the writer rewrites it only every so many splits) or a
metadata.yaml a power loss emptied. That was 'every file is complete; nothing to do', and rosbag2 and rosbags played
the bag without the files it did not list."""
import os
import signal
import subprocess
import sys

import yaml

from support.bags import IMAGE, image_cdr, read_rosbags
from support.paths import ROOT
from vidseg_ros.data.bags.recover import recover_bag, run

_KILLED_WHILE_CLOSING = '''
import os, signal, sys
from vidseg_ros.data.bags.writer import BagWriter
w = BagWriter(sys.argv[1], max_bag_duration_s=1.0, direct_io=False)
w.add_topic('/cam', sys.argv[2])
for i in range(40):
    w.write('/cam', bytes([i]) * 64, 10**18 + i * 10**9)
w.split()                            # close() closes the last split, then writes metadata.yaml: killed in between
os.kill(os.getpid(), signal.SIGKILL)
'''


def _killed_while_closing(bag):
    p = subprocess.run([sys.executable, '-c', _KILLED_WHILE_CLOSING, str(bag), IMAGE], capture_output=True,
                       text=True, timeout=120, env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})
    assert p.returncode == -signal.SIGKILL, p.stderr
    listed = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']['relative_file_paths']
    assert len(listed) < 40 == len(list(bag.glob('*.mcap')))
    return [bytes([i]) * 64 for i in range(40)]


def test_a_recorder_killed_between_its_last_split_and_metadata_yaml_is_recovered(tmp_path, capsys):
    bag = tmp_path / 'bag'
    sent = _killed_while_closing(bag)
    before = {f.name: f.read_bytes() for f in bag.iterdir()}
    assert run(bag) == 0
    out = tmp_path / 'bag_recovered'
    # the old code: 'every file is complete; nothing to do', no bag written
    assert 'did not list 1 of them' in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in bag.iterdir()} == before
    assert [d for _, d in read_rosbags([out])] == sent      # rosbags reads only the files metadata.yaml lists
    assert recover_bag(out).out is None                      # and that one is whole


def test_a_metadata_yaml_a_power_loss_emptied_is_written_anew(tmp_path):
    bag = tmp_path / 'bag'
    sent = _killed_while_closing(bag)
    (bag / 'metadata.yaml').write_text('')
    report = recover_bag(bag)
    assert report.out == tmp_path / 'bag_recovered' and len(report.unlisted) == 40 and not report.repaired
    assert [d for _, d in read_rosbags([report.out])] == sent
    assert os.stat(report.out / 'bag_0.mcap').st_ino == os.stat(bag / 'bag_0.mcap').st_ino    # linked, not copied


def test_a_bag_closed_properly_still_has_nothing_to_do(tmp_path):
    from vidseg_ros.data.bags.writer import BagWriter
    w = BagWriter(tmp_path / 'bag', max_bag_duration_s=1.0, direct_io=False)
    w.add_topic('/cam', IMAGE)
    for i in range(40):
        w.write('/cam', image_cdr(i), 10**18 + i * 10**9)
    w.close()
    assert recover_bag(tmp_path / 'bag').out is None and not (tmp_path / 'bag_recovered').exists()
