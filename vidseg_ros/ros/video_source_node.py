"""video_source_node: publishes a video file or an image folder as a camera (Image + CameraInfo).

For demos, tests and users without hardware. Frames are stamped with the node clock when published.
"""
from __future__ import annotations

if __name__ == '__main__':   # python -m: through entry, whose signal handlers cover the imports below
    from vidseg_ros.ros.entry import run_as_main
    run_as_main('vidseg_ros.ros.video_source_node')

import time

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from vidseg_ros.config import ConfigError
from vidseg_ros.constants import MAX_INPUT_PIXELS
from vidseg_ros.data.images import ImageError, from_rgb8
from vidseg_ros.data.video import VideoFrames, read_frame, resize_rgb
from vidseg_ros.ros.conversions import array_to_image_msg, pinhole_camera_info, rgb8_to_compressed_msg
from vidseg_ros.ros.core_logging import adopt
from vidseg_ros.ros.diagnostics import steady_timer
from vidseg_ros.ros.params import declare_settings, keep_last_qos, read_settings
from vidseg_ros.ros.settings import VideoSourceConfig
from vidseg_ros.ros.spin import run
from vidseg_ros.text import clip

FOLDER_RATE_HZ = 10.0
RATE_RANGE_HZ = (0.01, 1000.0)   # 100 s per frame at most: slower looks like a hung node
NO_CLOCK_WARN_S = 3.0            # with use_sim_time and no /clock this long after start: say why nothing comes


class AllUnreadable(ImageError):
    """Every image of a pass through the folder (or every frame of the video) failed to read: nothing will ever
    be published."""


class VideoSourceNode(Node):
    """Publishes `image` and/or `image/compressed` plus `camera_info` from a VideoFrames."""

    def __init__(self, **kwargs):
        super().__init__('vidseg_video_source', **kwargs)
        adopt(self)   # the core's log lines (the video reader's skipped frames) come as this node's
        declare_settings(self, VideoSourceConfig)
        self.cfg: VideoSourceConfig = read_settings(self, VideoSourceConfig)
        if not self.cfg.source:
            raise ConfigError('parameter `source` is empty: give a video file or image folder '
                              '(-p source:=/path/to/video.mp4)')
        check_rate(self.cfg.rate_hz)
        check_output(self.cfg)
        self.frames = VideoFrames(self.cfg.source)
        rate = self.cfg.rate_hz or self.frames.fps or FOLDER_RATE_HZ
        profile = keep_last_qos(self.cfg.output_reliability, self.cfg.output_depth)
        self.pub_raw = (self.create_publisher(Image, 'image', profile)
                        if self.cfg.transport in ('raw', 'both') else None)
        self.pub_compressed = (self.create_publisher(CompressedImage, 'image/compressed', profile)
                               if self.cfg.transport in ('compressed', 'both') else None)
        self.pub_info = self.create_publisher(CameraInfo, 'camera_info', profile)
        self.published = 0
        self.skipped = 0          # unreadable images of a folder, skipped
        self.finished = False
        self.failed = False       # every image of a folder pass was unreadable: exit 1
        self._iter = iter(self.frames)
        self._next_file = 0       # index into self.frames.files of the next image to read
        self._read_this_pass = False
        self._wait_started = time.monotonic()
        # On the node clock, as ROS timers are: with use_sim_time frames follow /clock (paused with it, back
        # with a looping player's), and none come before the first /clock, which _check_clock says.
        self.timer = self.create_timer(1.0 / rate, self._tick)
        self._clock_check = steady_timer(self, NO_CLOCK_WARN_S, self._check_clock)
        self.get_logger().info(f'publishing {self.cfg.source} at {rate:.1f} Hz '
                               f'({self.cfg.transport}, loop={self.cfg.loop})')

    def _check_clock(self) -> None:
        """Once, NO_CLOCK_WARN_S after start: with use_sim_time and still no /clock, say why nothing is
        published (the node said 'publishing ... at 10 Hz' and then nothing, for good)."""
        self.destroy_timer(self._clock_check)
        clock = self.get_clock()
        if clock.ros_time_is_active and not clock.now().nanoseconds:
            self.get_logger().warning(f'use_sim_time is set and no /clock has arrived after {NO_CLOCK_WARN_S:.0f} s: '
                                      f'frames are published on /clock time, none until it runs (start the '
                                      f'clock source, e.g. the simulator or bag player, or set use_sim_time:=false)')

    def _subscribers_ready(self) -> bool:
        """Whether the first frame may go: the wait ends for good once it does (a subscriber that leaves
        later, e.g. a respawned segmenter, held every frame until wait_timeout_s after the start)."""
        if self.cfg.wait_for_subscribers <= 0:
            return True
        count = self._image_subscribers()
        ready = count >= self.cfg.wait_for_subscribers
        if not ready and time.monotonic() - self._wait_started > self.cfg.wait_timeout_s:
            self.get_logger().warning(f'only {count} subscriber(s) after {self.cfg.wait_timeout_s:.0f} s; '
                                      'starting anyway')
            ready = True
        if ready:
            self.cfg = VideoSourceConfig(**{**self.cfg.__dict__, 'wait_for_subscribers': 0})
        return ready

    def _image_subscribers(self) -> int:
        """Subscribers of `image` and `image/compressed` together. With transport both only `image` was
        counted: a segmenter on image/compressed (segment.launch.py, its transport: compressed) was never
        seen, and the first frame waited wait_timeout_s (60 s under launch) before 'starting anyway'."""
        return sum(pub.get_subscription_count() for pub in (self.pub_raw, self.pub_compressed) if pub is not None)

    def _next_frame(self):
        """The next RGB frame, or None at the end of the stream."""
        if self.frames.files:
            return self._next_image()
        frame = next(self._iter, None)
        if frame is None and self.cfg.loop and self._read_this_pass:
            self._iter, self._read_this_pass = iter(self.frames), False
            frame = next(self._iter, None)
        if frame is None and not self._read_this_pass:
            # a video none of whose frames decodes (its data cut after the header) ended at once with exit 0,
            # 'published 0 frames', with loop too: a folder of unreadable images is exit 1
            raise AllUnreadable(f'no frame of the video {clip(self.cfg.source)} decodes')
        if frame is None:
            return None
        self._read_this_pass = True
        return frame[1]

    def _next_image(self):
        """The next readable image of the folder, read by index: an unreadable one is skipped (counted,
        logged) and the next one read in the same tick. VideoFrames' generator would end at the first
        unreadable image, which looked like the end of the folder."""
        files = self.frames.files
        while True:
            if self._next_file == len(files):
                if not self._read_this_pass:
                    raise AllUnreadable(f'none of the {len(files)} images in {clip(self.cfg.source)} is readable')
                if not self.cfg.loop:
                    return None
                self._next_file, self._read_this_pass = 0, False
            path = files[self._next_file]
            self._next_file += 1
            try:
                rgb = read_frame(path)
            except ImageError as e:
                self.skipped += 1
                self.get_logger().error(f'skipping unreadable frame: {e}', throttle_duration_sec=5.0)
                continue
            self._read_this_pass = True
            return rgb

    def _tick(self) -> None:
        if self.finished or not self._subscribers_ready():
            return
        if self.cfg.max_frames and self.published >= self.cfg.max_frames:
            return self._finish()
        try:
            rgb = self._next_frame()
        except AllUnreadable as e:
            self.get_logger().error(f'{e}: stopping')
            self.failed = True
            return self._finish()
        if rgb is None:
            return self._finish()
        rgb = resize_rgb(rgb, self.cfg.resize_hw)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.frame_id)
        if self.pub_raw is not None:
            self.pub_raw.publish(array_to_image_msg(from_rgb8(rgb, self.cfg.encoding), self.cfg.encoding, header))
        if self.pub_compressed is not None:
            self.pub_compressed.publish(rgb8_to_compressed_msg(rgb, header, 'jpeg', self.cfg.jpeg_quality))
        self.pub_info.publish(pinhole_camera_info(rgb.shape[1], rgb.shape[0], header, self.cfg.hfov_deg))
        self.published += 1

    def done(self) -> bool:
        """The last frame is out and the node should exit (``spin.run``)."""
        return self.failed or (self.finished and self.cfg.exit_at_end)

    def finish(self, code: int) -> int:
        if self.finished:
            time.sleep(0.5)  # let reliable subscribers fetch the last frames before we leave
        return code or int(self.failed)

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            n = self.skipped + self.frames.skipped
            skipped = f', skipped {n} unreadable' if n else ''
            self.get_logger().info(f'end of {self.cfg.source}: published {self.published} frames{skipped}')


def check_rate(rate_hz: float) -> None:
    """Raise ConfigError unless ``rate_hz`` is 0 (the video's own rate) or in RATE_RANGE_HZ (rcl refused a
    negative one with its own error text; 0.0001 Hz waited 10,000 s for the first frame)."""
    low, high = RATE_RANGE_HZ
    if rate_hz != 0.0 and not low <= rate_hz <= high:   # NaN fails both
        raise ConfigError(f'rate_hz: {rate_hz!r} is out of range {low}..{high} (0 = the video\'s own rate)')


def check_output(cfg: VideoSourceConfig) -> None:
    """Raise ConfigError for a setting of the published frames that its declared range (settings.py) cannot
    say and that fails only once frames go out: resize_hw [100000, 100000] (each side in range) asked OpenCV
    for 30 GB; hfov_deg 0 published an infinite focal length."""
    size = cfg.resize_hw
    if size and size[0] * size[1] > MAX_INPUT_PIXELS:
        raise ConfigError(f'resize_hw: {list(size)!r} is over {MAX_INPUT_PIXELS} pixels (H*W)')
    if not 0 < cfg.hfov_deg < 180:   # NaN fails too
        raise ConfigError(f'hfov_deg: {cfg.hfov_deg!r} is out of range: more than 0 and less than 180')


def main(args=None) -> int:
    return run(VideoSourceNode, args)

