"""bag-recover under process limits: a file-size limit (``ulimit -f``: the write fails with EFBIG, as on a FAT32 disk
past 4 GB) and a low open-file limit on a bag of many splits."""
import os
import resource
import subprocess
import sys

from support.bags import IMAGE, image_cdr
from support.paths import ROOT

from vidseg_ros.data.bags.reader import read_messages
from vidseg_ros.data.bags.recover import is_complete
from vidseg_ros.data.bags.writer import BagWriter


def _killed_bag(path, n, **kw):
    """A bag whose recorder was killed: no metadata.yaml, its last file cut mid-chunk."""
    w = BagWriter(path, **kw)
    w.add_topic('/cam/image', IMAGE)
    for i in range(n):
        w.write('/cam/image', image_cdr(i, 64, 64), 10**9 + i * 10**7)
    w.close()
    (path / 'metadata.yaml').unlink()
    last = w.files[-1]
    os.truncate(last, last.stat().st_size * 2 // 3)
    return path


def _recover(bag, *args, limit=None):
    def limited():
        resource.setrlimit(*limit)
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', str(bag), '--force', *map(str, args)],
                          capture_output=True, text=True, timeout=300, preexec_fn=limited if limit else None,
                          env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})


def test_a_file_size_limit_is_one_line_naming_it_and_leaves_nothing(tmp_path):
    """It said 'pass another --out DIR on a disk with free space': the disk was not full."""
    bag = _killed_bag(tmp_path / 'bag', 300, chunk_size_bytes=100_000)
    before = {p.name: p.read_bytes() for p in bag.iterdir()}
    p = _recover(bag, '--out', tmp_path / 'out', limit=(resource.RLIMIT_FSIZE, (500_000, resource.RLIM_INFINITY)))
    assert p.returncode == 2 and p.stdout == ''
    line, = p.stderr.strip().splitlines()
    assert line.startswith(f'vidseg bag-recover: error: writing the recovered bag failed (File too large); nothing was '
                           f'changed in {bag}; a file would pass the largest file'), line
    assert 'ulimit -f' in line and 'free space' not in line
    assert not (tmp_path / 'out').exists() and {p.name: p.read_bytes() for p in bag.iterdir()} == before
    assert _recover(bag, '--out', tmp_path / 'out').returncode == 0
    assert len(list(read_messages(tmp_path / 'out'))) > 150


def test_a_bag_of_more_splits_than_open_files_is_recovered_whole(tmp_path):
    bag = _killed_bag(tmp_path / 'bag', 150, chunk_size_bytes=20_000, max_bag_size_bytes=20_000)
    files = sorted(bag.glob('*.mcap'))
    assert len(files) > 60
    p = _recover(bag, '--out', tmp_path / 'out', limit=(resource.RLIMIT_NOFILE, (32, 32)))
    assert p.returncode == 0, p.stderr
    out = tmp_path / 'out'
    assert sorted(f.name for f in out.glob('*.mcap')) == sorted(f.name for f in files)
    assert all(is_complete(f) for f in out.glob('*.mcap'))
    warnings = []
    got = [m.log_time_ns for m in read_messages(out, warnings=warnings)]
    assert warnings == [] and got == sorted(got) and len(got) >= 148
