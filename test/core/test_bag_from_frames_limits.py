"""bag-from-frames stopped by a file-size limit (``ulimit -f``; a FAT32 disk past 4 GB): the write fails with EFBIG
(Python ignores SIGXFSZ). It said only 'error: [Errno 27] File too large' (no bag, no cause): one line naming the bag
and the limit now, nothing left behind, and the same command works once the limit is gone."""
import resource
import subprocess
import sys

import cv2
import numpy as np
from support.paths import ROOT

from vidseg_ros.data.bags.reader import read_messages


def _cli(*args, fsize=None):
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=300, preexec_fn=limited if fsize else None,
                          env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})


def test_a_file_size_limit_is_one_line_naming_the_bag_and_the_limit(tmp_path):
    src = tmp_path / 'frames'
    src.mkdir()
    for i in range(20):     # noise: 230 kB a frame in the bag, 4.6 MB in all
        cv2.imwrite(str(src / f'{i:03d}.png'), np.random.default_rng(i).integers(0, 255, (240, 320, 3), np.uint8))
    out = tmp_path / 'bag'
    p = _cli('bag-from-frames', src, '--out', out, fsize=1_000_000)
    assert p.returncode == 2 and p.stdout == ''
    line, = p.stderr.strip().splitlines()
    assert line == (f'vidseg bag-from-frames: error: {out}: File too large (past the largest file this process or '
                    'file system may write: ulimit -f; FAT32 takes 4 GB at most); nothing was left behind'), line
    assert not out.exists()
    p = _cli('bag-from-frames', src, '--out', out)
    assert p.returncode == 0, p.stderr
    assert sum(m.topic == '/camera/image_raw' for m in read_messages(out)) == 20
