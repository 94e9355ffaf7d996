"""bag-recover on a bag copied from a Mac (an AppleDouble ``._<name>`` beside each file, on FAT, exFAT or SMB):
those are no splits."""
import subprocess
import sys

import yaml

from support.bags import IMAGE, image_cdr, read_rosbags
from vidseg_ros.data.bags.writer import BagWriter

APPLE_DOUBLE = b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ' + bytes(4000)


def test_a_killed_bag_copied_from_a_mac_is_recovered(tmp_path):
    # 'vidseg bag-recover: error: bag/._bag_0.mcap is not an MCAP file (no MCAP magic); nothing touched' (exit 2)
    w = BagWriter(tmp_path / 'bag', chunk_size_bytes=100)
    w.add_topic('/cam', IMAGE)
    sent = [image_cdr(i) for i in range(10)]
    for i, data in enumerate(sent):
        w.write('/cam', data, 1000 + i)     # never closed: killed
    (tmp_path / 'bag' / '._bag_0.mcap').write_bytes(APPLE_DOUBLE)
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', str(tmp_path / 'bag'), '--force'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'bag_recovered'
    assert sorted(p.name for p in out.iterdir()) == ['bag_0.mcap', 'metadata.yaml']
    meta = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['relative_file_paths'] == ['bag_0.mcap']
    got = [d for _, d in read_rosbags([out])]
    assert len(got) >= 9 and got == sent[:len(got)]
