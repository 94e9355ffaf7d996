"""The registry-provided sample clip reader (the fetch itself is exercised by the ROS fixtures)."""
import cv2
import numpy as np
import pytest

from vidseg_ros.data.sample_video import SampleVideoError, read_frames


def test_read_frames_takes_every_nth_resized_rgb(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), (0, 0, 20 * i), np.uint8))   # BGR: red ramps up
    writer.release()
    frames = read_frames(path, 3, every=3, start=1, size_hw=(24, 32))
    assert [f.shape for f in frames] == [(24, 32, 3)] * 3
    reds = [int(f[..., 0].mean()) for f in frames]
    assert all(abs(r - 20 * i) <= 3 for r, i in zip(reds, (1, 4, 7))), reds
    with pytest.raises(SampleVideoError, match='only 3 of 20'):
        read_frames(path, 20, every=3, start=1)
    with pytest.raises(SampleVideoError, match='cannot open'):
        read_frames(tmp_path / 'missing.avi', 1)
