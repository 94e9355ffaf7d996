"""The settings of ``vidseg extract`` (``ExtractConfig``) and the counts of one run (``ExtractResult``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from vidseg_ros.config import setting
from vidseg_ros.data.datasets.stamp_order import REORDER_FRAMES

FORMATS = ('png', 'jpg', 'keep')


@dataclass
class ExtractConfig:
    """Settings of ``vidseg extract``."""

    topics: list[str] = setting([], 'Image topics to extract; empty = every Image/CompressedImage topic '
                                    'but segment_node\'s outputs (mask, overlay, ...)')
    image_format: str = setting('png', 'png (lossless), jpg, or keep (a CompressedImage\'s PNG / JPEG bytes '
                                       'written unchanged; other frames as png)', FORMATS)
    jpeg_quality: int = setting(95, 'JPEG quality when image_format is jpg')
    every: int = setting(1, 'Keep every N-th frame of each sequence')
    start_s: float = setting(0.0, 'Skip frames earlier than this many seconds after the first frame')
    stop_s: float = setting(0.0, 'Stop this many seconds after the first frame; 0 = to the end')
    max_gap_s: float = setting(0.5, 'A stamp gap larger than this (or a step back larger than this) starts a new '
                                    f'sequence; a frame up to {REORDER_FRAMES} frames late, less than this, takes '
                                    'its place')
    stamp: str = setting('header', 'Frame time: header stamp (falls back to the log time when zero) '
                                   'or bag log time', ('header', 'log'))
    workers: int = setting(1, 'Decode/encode worker processes (1 = in this process)')


@dataclass
class ExtractResult:
    """Counts of one extraction run."""

    written: int = 0
    skipped_existing: int = 0
    failed: int = 0
    duplicates: int = 0
    exif_reset: int = 0         # kept frames whose EXIF orientation was set to 1 (data.exif)
    exif_reencoded: int = 0     # kept frames encoded again for an orientation that could not be reset
    bytes_written: int = 0
    image_messages: int = 0     # image messages read (frames kept or not)
    selected: int = 0           # image messages inside the start_s/stop_s range
    sequences: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    empty_bags: list[str] = field(default_factory=list)      # why a bag gave no frame (also in warnings)
    skipped_topics: list[str] = field(default_factory=list)   # segment_node outputs left out
    first_failure: str = ''     # why the first frame that failed did (the error when every frame failed)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return self.written + self.skipped_existing

    def add(self, other: 'ExtractResult') -> None:
        """Counts of another part of the same run (a bag done elsewhere)."""
        for name in ('written', 'skipped_existing', 'failed', 'duplicates', 'exif_reset', 'exif_reencoded',
                     'bytes_written', 'image_messages', 'selected'):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.warnings.extend(other.warnings)
        self.empty_bags.extend(other.empty_bags)
        self.first_failure = self.first_failure or other.first_failure
        self.skipped_topics = sorted(set(self.skipped_topics) | set(other.skipped_topics))
