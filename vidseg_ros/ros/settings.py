"""Settings of the segment and video-source nodes (no rclpy import: docs and tests read them).

The segment node's parameters are ``EngineConfig`` (inference) plus ``SegmentNodeConfig`` (ROS side),
one flat namespace; each field name is the ROS parameter and the YAML key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vidseg_ros.config import ConfigError, setting
from vidseg_ros.constants import MAX_INPUT_PIXELS
from vidseg_ros.data.images import short

# A camera is a relative ROS namespace: tokens of letters, digits and _ (not starting with a digit) joined
# by single '/'. Nothing is normalised ('/a', 'a/' are refused, not read as 'a'), so distinct names can
# never map to the same topics.
CAMERA_NAME = re.compile(r'[A-Za-z_]\w*(/[A-Za-z_]\w*)*', re.ASCII)


@dataclass(frozen=True)
class SegmentNodeConfig:
    """ROS-side settings of segment_node."""

    transport: str = setting('raw', 'Input transport: raw subscribes `image` (sensor_msgs/Image), compressed '
                                    'subscribes `image/compressed` (sensor_msgs/CompressedImage)',
                             ('raw', 'compressed'), change='startup')
    cameras: list[str] = setting([], 'Camera namespaces served by one model, e.g. [front, rear] (relative, each '
                                     'once): subscribes <ns>/image and publishes ~/<ns>/mask ...; empty = one '
                                     'camera `image`. max_gap_s applies to every camera: one slower than '
                                     '1/max_gap_s (2 Hz by default) resets its temporal state on every frame '
                                     '(key_reason gap), so raise it for slow cameras', change='startup')
    input_reliability: str = setting('best_effort', 'Input QoS reliability (sensor-data default)',
                                     ('best_effort', 'reliable'), change='startup')
    input_depth: int = setting(1, 'Input QoS depth; 1 = always segment the newest frame (camera_info is '
                                  'kept at least 30 deep)', range=(1, 1000), change='startup')
    output_reliability: str = setting('reliable', 'Output QoS reliability', ('best_effort', 'reliable'), change='startup')
    output_depth: int = setting(2, 'Output QoS depth', range=(1, 1000), change='startup')
    max_input_pixels: int = setting(MAX_INPUT_PIXELS, 'Largest frame accepted (height x width, read from the '
                                                      'Image or PNG/JPEG header before decoding); larger frames '
                                                      'are rejected as bad input', range=(1, 16384 * 16384))
    overlay_alpha: float = setting(0.5, 'Overlay opacity of the colour mask over the image', range=(0.0, 1.0))
    publish_mask: bool = setting(True, 'Publish ~/mask (mono8 class ids)')
    publish_color_mask: bool = setting(True, 'Publish ~/color_mask (rgb8 palette colours)')
    publish_overlay: bool = setting(True, 'Publish ~/overlay (rgb8 image blended with colours)')
    publish_confidence: bool = setting(True, 'Publish ~/confidence (probability of the chosen class)')
    confidence_encoding: str = setting('mono8', 'mono8 = probability*255, 32FC1 = probability',
                                       ('mono8', '32FC1'))
    class_prob_index: int = setting(-1, 'Publish ~/class_prob, the 32FC1 probability of this class id; '
                                        '-1 = off', range=(-1, 255))
    mask_resolution: str = setting('input', 'Size of published masks: the input image size, or the network '
                                            'input size without its stride padding (the resized frame)',
                                   ('input', 'network'))
    use_camera_info: bool = setting(False, 'Subscribe camera_info (matched by stamp) and publish '
                                           '~/camera_info scaled to the mask size', change='startup')
    class_names: list[str] = setting([], 'Override the checkpoint\'s class names (same count)')
    palette: list[int] = setting([], 'Override the palette: flat [r,g,b, r,g,b, ...] per class', range=(0, 255))
    class_remap: list[int] = setting([], 'Published id for each model class id (length = class count); '
                                         'applied to ~/mask for downstream consumers', range=(0, 255))
    ignore_classes: list[int] = setting([], 'Model class ids published as ignore_value in ~/mask and shown '
                                            'transparent in the overlay', range=(0, 255))
    ignore_value: int = setting(255, 'Mask value written for ignored classes', range=(0, 255))
    diagnostics_period_s: float = setting(1.0, 'Period of /diagnostics messages', range=(0.05, 3600.0), change='startup')
    error_throttle_s: float = setting(5.0, 'Minimum time between repeated error logs of one kind on one '
                                           'camera', range=(0.0, 3600.0))

    def __post_init__(self):
        check_cameras(self.cameras)


def check_cameras(cameras: list[str]) -> None:
    """Raise ConfigError unless every camera name is a relative namespace given once (a name twice would
    subscribe twice and serve, publish and report every frame twice)."""
    for name in cameras:
        if not CAMERA_NAME.fullmatch(name):
            raise ConfigError(f'cameras: {short(name)} is not a relative namespace such as front or car/front '
                              f'(letters, digits and _, not starting with a digit, joined by single /; '
                              f'an empty list serves the one camera `image`)')
    repeated = sorted({name for name in cameras if cameras.count(name) > 1})
    if repeated:
        raise ConfigError(f'cameras: {", ".join(map(short, repeated))} given more than once')


@dataclass(frozen=True)
class VideoSourceConfig:
    """Settings of video_source_node: a video file or image folder published as a camera."""

    source: str = setting('', 'Video file, image folder (numbered names in number order, hidden files left out) '
                              'or glob pattern; unreadable images and video frames, and images over 4096x4096 '
                              'pixels, are skipped and counted; a source of which no frame decodes fails',
                          path=True)
    rate_hz: float = setting(0.0, 'Publish rate, 0.01..1000 Hz; 0 = the video\'s own rate (10 Hz for image folders)')
    loop: bool = setting(False, 'Start again at the end (stamps keep increasing)')
    frame_id: str = setting('camera', 'header.frame_id of the published messages')
    encoding: str = setting('rgb8', 'Image encoding published', ('rgb8', 'bgr8', 'mono8'))
    transport: str = setting('raw', 'raw publishes `image`, compressed `image/compressed` (jpeg), both both',
                             ('raw', 'compressed', 'both'))
    jpeg_quality: int = setting(90, 'JPEG quality of image/compressed', range=(0, 100))
    resize_hw: list[int] = setting([], 'Resize frames to [H, W] before publishing (H*W at most 4096x4096); '
                                           'empty = as read', range=(1, MAX_INPUT_PIXELS), lengths=(0, 2))
    max_frames: int = setting(0, 'Stop after this many frames; 0 = all', range=(0, 2**31 - 1))
    wait_for_subscribers: int = setting(0, 'Hold the first frame until this many subscribers match `image` '
                                           'and image/compressed together', range=(0, 1000))
    wait_timeout_s: float = setting(10.0, 'Give up waiting for subscribers after this long', range=(0.0, 86400.0))
    exit_at_end: bool = setting(True, 'Shut the node down after the last frame (when not looping)')
    hfov_deg: float = setting(60.0, 'Horizontal field of view used for the published CameraInfo, degrees: '
                                    'more than 0, less than 180')
    output_reliability: str = setting('reliable', 'Output QoS reliability (reliable also serves best-effort '
                                                  'subscribers)', ('best_effort', 'reliable'),
                                      renamed_from=('reliability',))
    output_depth: int = setting(5, 'Output QoS depth', range=(1, 1000), renamed_from=('depth',))
