"""A video file's reported frame rate: a container's nonsense (90 kHz, NaN, negative) is unknown, not a rate."""
import math

import cv2
import numpy as np
import pytest

from vidseg_ros.data import video
from vidseg_ros.data.video import VideoFrames


class _Capture:
    """cv2.VideoCapture of a file whose header reports ``FPS``."""
    FPS = 0.0

    def __init__(self, source):
        pass

    def isOpened(self):
        return True

    def get(self, prop):
        return self.FPS if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


@pytest.mark.parametrize('reported,kept', [(90000.0, 0.0), (1000.5, 0.0), (math.nan, 0.0), (math.inf, 0.0),
                                            (-25.0, 0.0), (0.0, 0.0), (1000.0, 1000.0), (29.97, 29.97)])
def test_a_nonsense_frame_rate_is_unknown_with_one_warning(tmp_path, monkeypatch, caplog, reported, kept):
    """fps was taken as reported: a video source node published at 90000 Hz (or failed on NaN). A rate in
    range, or none (0), is kept without a word."""
    path = tmp_path / 'clip.mp4'
    path.write_bytes(b'not read: the capture is replaced')
    monkeypatch.setattr(_Capture, 'FPS', reported)
    monkeypatch.setattr(video.cv2, 'VideoCapture', _Capture)
    with caplog.at_level('WARNING'):
        assert VideoFrames(path).fps == kept
    warned = [r.getMessage() for r in caplog.records]
    if kept == reported:
        assert not warned
    else:
        assert len(warned) == 1 and str(path) in warned[0] and 'not a frame rate (0 < fps <= 1000)' in warned[0]


def test_a_real_video_keeps_its_frame_rate(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 12.0, (32, 24))
    if not writer.isOpened():
        pytest.skip('this OpenCV build writes no MJPG AVI')
    for i in range(3):
        writer.write(np.full((24, 32, 3), 60 * i, np.uint8))
    writer.release()
    frames = VideoFrames(path)
    assert frames.fps == pytest.approx(12.0) and len(list(frames)) == 3
