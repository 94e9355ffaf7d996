"""Frame sources: the registry-provided sample clip reader (the fetch itself is exercised by the ROS
fixtures) and ``VideoFrames`` (video files, image folders, globs)."""
import cv2
import numpy as np
import pytest
from support.videos import mjpg_avi

from vidseg_ros.data.sample_video import SampleVideoError, read_frames
from vidseg_ros.data.order import natural_key
from vidseg_ros.data.video import VideoFrames


def test_read_frames_takes_every_nth_resized_rgb(tmp_path):
    path = mjpg_avi(tmp_path / 'clip.avi', 10, fps=10, bgr=(0, 0, 1))   # BGR: red ramps up
    frames = read_frames(path, 3, every=3, start=1, size_hw=(24, 32))
    assert [f.shape for f in frames] == [(24, 32, 3)] * 3
    reds = [int(f[..., 0].mean()) for f in frames]
    assert all(abs(r - 20 * i) <= 3 for r, i in zip(reds, (1, 4, 7))), reds
    with pytest.raises(SampleVideoError, match='only 3 of 20'):
        read_frames(path, 20, every=3, start=1)
    with pytest.raises(SampleVideoError, match='cannot open'):
        read_frames(tmp_path / 'missing.avi', 1)


def test_image_folders_and_globs_go_in_number_order(tmp_path):
    """frame_0 ... frame_11 without zero padding went 0, 1, 10, 11, 2, ... (plain string order)."""
    for i in range(12):
        cv2.imwrite(str(tmp_path / f'frame_{i}.png'), np.full((4, 6, 3), i, np.uint8))
    (tmp_path / 'notes.txt').write_text('not a frame')
    for source in (tmp_path, tmp_path / 'frame_*.png'):
        frames = VideoFrames(source)
        assert [f.name for f in frames.files] == [f'frame_{i}.png' for i in range(12)]
        assert [int(rgb[0, 0, 0]) for _, rgb in frames] == list(range(12))


def test_natural_key_orders_numbers_by_value_and_any_names_without_error():
    names = ['b', 'a10', 'a1b2', 'a2', 'a1b', 'a01', 'a1', 'A3', '10', '9x']
    assert sorted(names, key=natural_key) == ['9x', '10', 'A3', 'a01', 'a1', 'a1b', 'a1b2', 'a2', 'a10', 'b']
