"""Frames from a video file, an image folder or a glob, as RGB arrays (ROS-free)."""
from __future__ import annotations

import glob as globlib
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.constants import MAX_INPUT_PIXELS
from vidseg_ros.data.image_headers import file_image_hw
from vidseg_ros.data.images import ImageError, check_pixels, read_rgb
from vidseg_ros.data.order import natural_key
from vidseg_ros.engine.resize import resize_image
from vidseg_ros.files import cv_path, file_problem
from vidseg_ros.text import clip

# the frame files of a folder or glob: the formats images.py reads (FILE_FORMATS) that hold one camera frame; GIF (often
# animated: its first frame only) and JPEG 2000 are read as single images, not listed as frames
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff', '.pgm', '.ppm', '.pbm', '.pnm', '.pam')
# Highest frame rate taken from a container: a 90 kHz time base (90000), a millisecond one (1000 is kept,
# as high-speed cameras record up to it) or NaN are what broken headers report, not frame rates.
MAX_FPS = 1000.0
# Failed reads in a row after which a video has ended: a damaged frame in the middle failed one read and ended the
# stream there (4 of 10 frames); the read after it returns the next frame. At the real end every read fails.
MAX_UNREADABLE_IN_A_ROW = 25

log = logging.getLogger(__name__)


class VideoFrames:
    """Iterates (index, rgb) over a video file, an image folder or a glob pattern.

    The images of a folder or glob come in name order, numbers by value (``natural_key``): ``frame_2``
    before ``frame_10``, as they were numbered, padded with zeros or not. Hidden files (``.name``, such as the
    ``._frame.png`` metadata files macOS writes beside each image on other file systems) are not frames, as a
    glob's ``*`` does not match them either. An image larger than ``MAX_INPUT_PIXELS`` is refused from its header
    (``read_frame``). A video frame that does not decode is skipped with a warning; iteration over a folder or glob
    raises ImageError at an unreadable image.

    Args:
        source: path to a video file, a folder of images, or a glob such as ``frames/*.png``.
    """

    def __init__(self, source: str | Path):
        self.source = str(source)
        path = Path(self.source)
        self.files: list[Path] = []
        self.fps = 0.0
        self.skipped = 0    # video frames that did not decode, skipped (all passes)
        self.short_of = 0   # frames a video's header reports beyond those that came (a cut file, a damaged end)
        if path.is_dir():
            self.files = image_files(path)
        elif path.is_file():
            cap = cv2.VideoCapture(cv_path(self.source))
            if not cap.isOpened():
                raise ImageError(f'OpenCV cannot open video {self.source}')
            self.fps = reported_fps(cap.get(cv2.CAP_PROP_FPS), self.source)
            height, width = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            cap.release()
            check_pixels(height, width, MAX_INPUT_PIXELS, f'video {clip(self.source)}: its frames')
        elif any(c in self.source for c in '*?['):
            self.files = sorted((Path(p) for p in globlib.glob(self.source)
                                 if Path(p).suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        else:
            # there but neither a folder nor a file (a FIFO, a device, a link loop) was 'does not exist'
            there = os.path.lexists(path) and file_problem(path)
            raise ImageError(f'video source {clip(self.source)} {there or "does not exist"}')
        if (path.is_dir() or not path.exists()) and not self.files:
            raise ImageError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found in {self.source}')

    @property
    def is_video(self) -> bool:
        return not self.files

    def __len__(self) -> int:
        if self.files:
            return len(self.files)
        cap = cv2.VideoCapture(cv_path(self.source))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        return n

    def __iter__(self):
        if self.files:
            for i, f in enumerate(self.files):
                yield i, read_frame(f)
            return
        cap = cv2.VideoCapture(cv_path(self.source))
        try:
            i = failed = skipped = 0
            while failed < MAX_UNREADABLE_IN_A_ROW:
                ok, bgr = cap.read()
                if not ok:
                    failed += 1
                    continue
                if failed:
                    self.skipped, skipped = self.skipped + failed, skipped + failed
                    log.warning('%s: skipped %d frame(s) that did not decode before frame %d', clip(self.source),
                                failed, i)
                    failed = 0
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                i += 1
            self._check_count(cap, i + skipped)
        finally:
            cap.release()

    def _check_count(self, cap, seen: int) -> None:
        """Say once when the header reports more frames than came: a file cut short, or damaged frames at its end,
        which end the reads as the end of the file does (a bag made of it missed its tail without a word). Not an
        error: for some containers the count is an estimate from the duration."""
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if reported > seen and not self.short_of:
            self.short_of = reported - seen
            log.warning('%s: the video reports %d frames, %d came: the file may be cut short or its last frames '
                        'damaged', clip(self.source), reported, seen)


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` as frames, in name order with numbers by value; hidden files left out
    (``VideoFrames``)."""
    return sorted((p for p in Path(folder).iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith('.')), key=natural_key)


def check_file_pixels(path, max_pixels: int = MAX_INPUT_PIXELS, what: str = 'image file') -> None:
    """Refuse (ImageError naming ``what`` and the file) an image file whose header says it has more than
    ``max_pixels`` pixels, or that cannot be sized: nothing is decoded."""
    try:
        height, width = file_image_hw(path)
    except OSError as e:    # a dangling link or a link loop, a folder named like an image, no permission
        raise ImageError(f'cannot read {what} {clip(path)}: {e.strerror or e}') from None
    check_pixels(height, width, max_pixels, f'{what} {clip(path)}')


def check_frame_sizes(records: Iterable, labels: bool = True, max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """Refuse (ImageError, one line naming the file and the limit) a frame, or with ``labels`` a label, of dataset
    ``records`` (``FrameRecord``) whose header claims more than ``max_pixels`` pixels: read from the headers alone,
    once, before a command decodes the dataset (train when its datasets are built, eval, propagate, make-variant,
    dataset-import), so it stops before a model, a loader worker or a job starts. Decoded as read, a 1.2 MB PNG
    of 20000x20000 among six 64x64 frames took training to 5.1 GB (each loader worker decodes it for each sample
    holding it) and an eval to 15.5 GB. About 50 us a file: CamVid's 468 frames and labels in 0.03 s (0.34 s
    cold)."""
    seen: set = set()
    for rec in records:
        for path, what in ((rec.image, 'image file'), (rec.label if labels else None, 'label file')):
            if path is None or path in seen:
                continue
            seen.add(path)
            check_file_pixels(path, max_pixels, what)


def read_frame(path, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, refused (ImageError) when its header says it has more than
    ``max_pixels`` pixels: a 389 KB PNG of 20000x20000 decoded to 1.2 GB (2.3 GB peak)."""
    check_file_pixels(path, max_pixels)
    return read_rgb(path)


def reported_fps(value, source: str) -> float:
    """A container's frame rate, or 0.0 (unknown: callers fall back) when it is not finite or not in
    (0, ``MAX_FPS``]; a nonsense value is named in one warning."""
    fps = float(value or 0.0)
    if math.isfinite(fps) and 0 < fps <= MAX_FPS:
        return fps
    if fps != 0:
        log.warning('%s: the video reports %s frames per second, not a frame rate (0 < fps <= %g): taken as '
                    'unknown', source, value, MAX_FPS)
    return 0.0


def resize_rgb(rgb: np.ndarray, size_hw: list[int] | tuple[int, int] | None) -> np.ndarray:
    """Resize to (H, W) as the engine does (``engine.resize``: area along a shrinking axis, bilinear along a growing
    one; INTER_AREA alone was nearly nearest-neighbour when the video source's resize_hw grew a frame); no-op for
    empty/None sizes."""
    if not size_hw:
        return rgb
    return resize_image(rgb, int(size_hw[0]), int(size_hw[1]))
