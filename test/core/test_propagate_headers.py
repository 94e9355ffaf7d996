"""``vidseg propagate`` reads each frame's header once while it plans its jobs.

Counted by wrapping ``image_headers.image_file_info`` (every header read goes through it): the pixel-limit check
(``video.check_frame_sizes``) and then the cut into parts of one frame size (``run._same_size_parts``) each read
every frame's header, 2 reads a frame (300 frames: 600 reads); now 1.
"""
from collections import Counter

import cv2
import numpy as np
import pytest

from vidseg_ros.data import image_headers
from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
from vidseg_ros.data.labelling.propagate import PropagateConfig
from vidseg_ros.data.labelling.run import propagate_dataset


def _dataset(root, sizes, every: int = 4):
    """Sequence 's' of frames of ``sizes`` ((h, w) each), a human label on every ``every``-th."""
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    recs = []
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        texture = ((np.sin((xx + i) / 3.0) + np.cos(yy / 2.0)) * 60 + 128).astype(np.uint8)
        image = root / 'images' / f'{i:03d}.png'
        cv2.imwrite(str(image), np.dstack([texture] * 3))
        label = root / 'labels' / f'{i:03d}.png' if i % every == 0 else None
        if label:
            cv2.imwrite(str(label), (xx > w // 2).astype(np.uint8))
        recs.append(FrameRecord('s', i, image, label, (i + 1) * 10**8, 'human' if label else 'none'))
    write_index(root, recs)
    write_meta(root, {'classes': ['a', 'b'], 'ignore_index': 255})
    return root


def _header_reads(monkeypatch) -> Counter:
    reads: Counter = Counter()
    real = image_headers.image_file_info

    def counting(path):
        reads[str(path)] += 1
        return real(path)
    monkeypatch.setattr(image_headers, 'image_file_info', counting)
    return reads


@pytest.mark.parametrize('method', ['flow', 'tracker'])
def test_each_frame_header_read_once(tmp_path, monkeypatch, method):
    """13 frames, the size changing at frame 8 (two parts, each with its labels): old code 2 reads a frame."""
    root = _dataset(tmp_path / 'd', [(24, 32)] * 8 + [(32, 40)] * 5)
    reads = _header_reads(monkeypatch)
    counts = propagate_dataset(root, PropagateConfig(method=method, dis_preset='ultrafast'))
    assert counts['total_propagated'] == 9
    frames = {p: k for p, k in reads.items() if '/images/' in p}
    assert len(frames) == 13 and set(frames.values()) == {1}, frames


def test_sizes_read_once_only_inside(tmp_path, monkeypatch):
    """Inside ``sizes_read_once`` a file is sized once (a replaced file keeps its first size); outside, each call
    reads the header again, and the memo ends with the block."""
    path = tmp_path / 'f.png'
    cv2.imwrite(str(path), np.zeros((4, 6), np.uint8))
    reads = _header_reads(monkeypatch)
    with image_headers.sizes_read_once():
        assert image_headers.file_image_hw(path) == (4, 6)
        cv2.imwrite(str(path), np.zeros((5, 7), np.uint8))
        assert image_headers.file_image_hw(str(path)) == (4, 6)      # str or Path: one file
        assert reads[str(path)] == 1
    assert image_headers.file_image_hw(path) == (5, 7)
    assert image_headers.file_image_hw(path) == (5, 7)
    assert reads[str(path)] == 3


def test_sizes_read_once_does_not_keep_errors(tmp_path):
    """A file that cannot be sized raises each time (nothing is remembered for it)."""
    path = tmp_path / 'bad.png'
    path.write_bytes(b'not an image')
    with image_headers.sizes_read_once():
        for _ in range(2):
            with pytest.raises(image_headers.ImageError):
                image_headers.file_image_hw(path)
