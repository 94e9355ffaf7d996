"""bag-recover on a split bag whose recorder was killed: the closed splits are carried over as they are (linked, or
copied to another disk), the cut one rewritten, and the result reads whole."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from support.bags import IMAGE, image_cdr, read_rosbags
from vidseg_ros.data.bags.recover import recover_bag
from vidseg_ros.data.bags.writer import BagWriter


def killed_split_bag(path: Path, n: int = 20) -> list[bytes]:
    """A bag of 3 splits as a SIGKILL during the third leaves it (the writer is never closed)."""
    w = BagWriter(path, chunk_size_bytes=100, max_bag_size_bytes=9000)
    w.add_topic('/cam', IMAGE)
    sent = [image_cdr(i) for i in range(n)]
    for i, data in enumerate(sent):
        w.write('/cam', data, 1000 + i)
    assert [f.name for f in w.files] == ['bag_0.mcap', 'bag_1.mcap', 'bag_2.mcap']
    return sent


def _check(bag: Path, out: Path, sent: list[bytes], before: dict[str, bytes]) -> None:
    assert {f.name: f.read_bytes() for f in bag.iterdir()} == before     # the original untouched
    assert sorted(p.name for p in out.iterdir()) == ['bag_0.mcap', 'bag_1.mcap', 'bag_2.mcap', 'metadata.yaml']
    for name in ('bag_0.mcap', 'bag_1.mcap'):      # closed splits: as they were
        assert (out / name).read_bytes() == before[name]
    assert [d for _, d in read_rosbags([out])] == sent
    meta = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['relative_file_paths'] == ['bag_0.mcap', 'bag_1.mcap', 'bag_2.mcap']
    assert meta['message_count'] == len(sent)


def test_a_killed_split_bag_is_recovered_whole_and_again_beside_it(tmp_path):
    bag = tmp_path / 'bag'
    sent = killed_split_bag(bag)
    before = {f.name: f.read_bytes() for f in bag.iterdir()}
    report = recover_bag(bag, force=True)
    assert report.out == tmp_path / 'bag_recovered' and report.repaired == ['bag_2.mcap']
    _check(bag, report.out, sent, before)
    first = {f.name: f.read_bytes() for f in report.out.iterdir()}
    again = recover_bag(bag, force=True)        # never over the first recovery
    assert again.out == tmp_path / 'bag_recovered_1'
    _check(bag, again.out, sent, before)
    assert {f.name: f.read_bytes() for f in report.out.iterdir()} == first


def test_a_killed_split_bag_is_recovered_onto_another_disk(tmp_path):
    # --out on another file system (the bag's disk is full): the closed splits cannot be linked there, and are copied
    if not os.path.isdir('/dev/shm') or os.stat('/dev/shm').st_dev == os.stat(tmp_path).st_dev:
        pytest.skip('no other file system than the test folder\'s at /dev/shm')
    bag = tmp_path / 'bag'
    sent = killed_split_bag(bag)
    before = {f.name: f.read_bytes() for f in bag.iterdir()}
    other = Path(tempfile.mkdtemp(prefix='vidseg_test_recover_', dir='/dev/shm'))
    try:
        report = recover_bag(bag, other / 'rescued', force=True)
        _check(bag, other / 'rescued', sent, before)
        assert report.out == other / 'rescued' and report.repaired == ['bag_2.mcap']
    finally:
        shutil.rmtree(other)
