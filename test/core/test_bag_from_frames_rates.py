"""bag-from-frames stamps frame i at start + i / rate: a rate whose stamps a ROS time cannot hold apart is one
error line, and no bag."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag
from vidseg_ros.data.bags.reader import read_messages


@pytest.mark.parametrize('rate,says', [
    # inf: period 0, every frame stamped alike (exit 0; now refused as the option is parsed); 1e-30: frame 2 at
    # 1e39 ns, 'internal error ... struct.error: argument out of range'
    ('inf', "'--rate-hz': inf must be > 0 and finite"), ('3e9', 'rate_hz must be > 0 and at most 1e9'),
    ('1e-30', 'frame 2 would be stamped past 2**31 s')])
def test_a_rate_beyond_what_stamps_hold_is_one_error_line_and_no_bag(tmp_path, rate, says):
    src = tmp_path / 'src'
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f'{i:03d}.png'), np.full((8, 8, 3), i, np.uint8))
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-from-frames', str(src), '--out',
                        str(tmp_path / 'bag'), '--rate-hz', rate], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / 'bag').exists()


def test_the_highest_rate_stamps_each_frame_a_nanosecond_apart(tmp_path):
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    write_bag(tmp_path / 'bag', [frames], BagFromFramesConfig(rate_hz=1e9, camera_info=False))
    assert [m.log_time_ns for m in read_messages(tmp_path / 'bag')] == [1_700_000_000_000_000_000 + i for i in range(3)]


def test_an_infinite_rate_is_refused_by_the_writer_too(tmp_path):
    """The Python API has no option check: write_bag refuses it itself."""
    with pytest.raises(ValueError, match='rate_hz must be > 0 and at most 1e9'):
        write_bag(tmp_path / 'bag', [[np.zeros((4, 4, 3), np.uint8)]], BagFromFramesConfig(rate_hz=float('inf')))
    assert not (tmp_path / 'bag').exists()
