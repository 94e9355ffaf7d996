"""The ROS side of one camera of the segment node: subscriptions, one-slot mailbox, CameraInfo matching
and one publisher per entry of ``engine.outputs.OUTPUTS`` (read when a camera starts)."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.exceptions import NameValidationException
from rclpy.qos import qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vidseg_ros.data.images import short
from vidseg_ros.engine import outputs
from vidseg_ros.ros.camera_stats import CameraStats
from vidseg_ros.ros.conversions import (array_to_image_msg, compressed_msg_to_rgb8, image_msg_to_rgb8,
                                        scale_camera_info)
from vidseg_ros.ros.guards import camera_info_image_size, camera_info_problem, camera_info_size_problem
from vidseg_ros.ros.params import keep_last_qos, unmatched_publishers
from vidseg_ros.ros.settings import SegmentNodeConfig

CAMERA_INFO_CACHE = 30   # recent CameraInfo messages kept for matching by stamp
CAMERA_INFO_WAIT_S = 0.1  # how long the worker waits for the CameraInfo of a frame that came first
CAMERA_INFO_ALIVE_S = 1.0  # camera_info counts as flowing when one arrived this recently
IMAGE_GAP_S = CAMERA_INFO_ALIVE_S  # images resuming after this long a silence: a camera (re)starting
# Frames in a row that waited for their CameraInfo in vain while camera_info flowed: this camera's CameraInfos
# do not match its images (stamped apart), so later frames do not wait, until one that would have matched comes.
INFO_MISSES_NO_WAIT = 3


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def newest_with_stamp(infos, target_ns: int) -> CameraInfo | None:
    """The last CameraInfo of ``infos`` stamped ``target_ns`` (a camera that re-sent one: its correction)."""
    return next((i for i in reversed(infos) if stamp_ns(i.header.stamp) == target_ns), None)


@dataclass
class Job:
    msg: object
    received_ns: int     # node clock when the callback parked the message
    received_mono: float
    after_gap: bool = False   # the first image after IMAGE_GAP_S without any (or one dropped in its place)


class CameraIO:
    """Topics of one camera namespace; arrivals and losses are counted in ``stats``.

    Args:
        lock: the segmenter's condition: parking a frame wakes the inference worker.
        cfg: start-up settings (topics, QoS).
    """

    def __init__(self, node, namespace: str, lock: threading.Condition, cfg: SegmentNodeConfig,
                 stats: CameraStats):
        self.node, self.cfg, self.stats = node, cfg, stats
        self._lock = lock
        self.infos: deque = deque(maxlen=CAMERA_INFO_CACHE)
        self._last_info_at = float('-inf')   # monotonic time the last CameraInfo arrived
        self._last_image_at = float('-inf')  # monotonic time the last image arrived (executor side)
        self._info_cond = threading.Condition()
        self._slot: Job | None = None
        self._image_size = (0, 0)   # (width, height) of the frame last converted: its CameraInfo must match
        # The CameraInfo of the frame in the worker, held from its start (_hold_info): the cache alone lost it
        # to the newer ones that came during a long inference (30 at 30 Hz: a 1 s step, a big model on a CPU).
        self._frame_stamp: int | None = None
        self._frame_info: CameraInfo | None = None
        # One worker serves every camera: a camera whose CameraInfos are stamped apart from its images (1 ms
        # before them) cost that worker CAMERA_INFO_WAIT_S per frame, and the other cameras' rates with it
        # (30 Hz each: the healthy one fell to 11 Hz). Misses in a row, and the stamps that went without.
        self._info_misses = 0
        self._missed_stamps: deque = deque(maxlen=CAMERA_INFO_CACHE)
        # destroy() (executor) against the worker publishing: a worker that deactivate gave up waiting for
        # finds the publishers gone and publishes nothing, instead of racing their destruction.
        self._pubs_lock = threading.Lock()
        self._subs: list = []
        self.pubs: dict = {}
        self.pub_info = self._info_sub = None
        try:
            self._create_topics(namespace)
        except BaseException as e:
            # a camera that cannot have all its topics has none: those created were left for good (activate
            # failed, they stayed matched and the next activate made them twice)
            self.destroy()
            if isinstance(e, NameValidationException):   # the name ROS refuses comes from `cameras`
                raise ValueError(f'cameras: {short(namespace, 40)}: ROS refuses its topic names: '
                                 f'{str(e).splitlines()[0].rstrip(":")}') from None
            raise

    def _create_topics(self, namespace: str) -> None:
        node, cfg = self.node, self.cfg
        prefix = f'{namespace}/' if namespace else ''
        out = f'~/{namespace}/' if namespace else '~/'
        in_qos = keep_last_qos(cfg.input_reliability, cfg.input_depth)
        out_qos = keep_last_qos(cfg.output_reliability, cfg.output_depth)
        image_type, image_topic = ((CompressedImage, prefix + 'image/compressed') if cfg.transport == 'compressed'
                                   else (Image, prefix + 'image'))
        # CameraInfo is matched to its image by exact stamp in the worker (matching_info), not with
        # message_filters: its synchroniser raises inside the executor on a stamp it cannot convert
        # (negative seconds), which would stop the node; one matching path, tested with and without it.
        self._subs.append(self._subscribe(lambda **kw: node.create_subscription(
            image_type, image_topic, self._on_image, in_qos, **kw)))
        if cfg.use_camera_info:
            # Deep enough for the cache: CameraInfo is matched by stamp, not 'the newest wins' as images are
            # (input_depth 1). A depth-1 reader kept only the last of the CameraInfos that came between two
            # executor passes (a burst, a busy GIL): their frames went out without ~/camera_info.
            info_qos = keep_last_qos(cfg.input_reliability, max(cfg.input_depth, CAMERA_INFO_CACHE))
            self._info_sub = node.create_subscription(CameraInfo, prefix + 'camera_info', self._on_camera_info,
                                                      info_qos)
            self._subs.append(self._info_sub)
            self.pub_info = node.create_publisher(CameraInfo, out + 'camera_info', out_qos)
        for o in outputs.OUTPUTS:
            self.pubs[o.name] = node.create_publisher(Image, out + o.name, out_qos)

    def _subscribe(self, create):
        """``create(**kwargs)`` with a message-lost callback, so messages the middleware reports lost
        before our callback are counted (`lost_in_transport`); without it where the RMW cannot. A publisher
        of incompatible QoS is said with the setting that fixes it (``_on_incompatible_qos``)."""
        try:
            return create(event_callbacks=SubscriptionEventCallbacks(
                message_lost=self._on_message_lost, incompatible_qos=self._on_incompatible_qos))
        except UnsupportedEventTypeError:
            return create(event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))

    def _on_incompatible_qos(self, event) -> None:
        """A camera publishing best effort to our reliable input (or another mismatch): DDS never matches it,
        so no frame arrives. rclpy's default said so in one generic line and /diagnostics stayed OK ('waiting
        for images'); now the fix is named, and the status is WARN while such a publisher is unmatched."""
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self.stats.incompatible_policy = policy
        fix = ('input_reliability:=best_effort' if policy == 'RELIABILITY' and self.cfg.input_reliability == 'reliable'
               else "the camera's QoS")
        self.stats.log_error('incompatible_qos', f'a publisher offers QoS incompatible with ours ({policy}): its '
                                                 f'messages are NOT received; set {fix}', True)

    def unmatched_publishers(self) -> int:
        """Publishers of our input types on our input topics that DDS did not match with us (incompatible
        QoS), where an incompatible one was reported (the graph and the matching are not updated at the same
        instant: a new publisher may briefly be in one and not the other)."""
        if not self.stats.incompatible_policy:
            return 0
        unmatched = 0
        for sub in self._subs:
            try:
                kind = sub.msg_type.__module__.split('.')[0] + '/msg/' + sub.msg_type.__name__
                unmatched += unmatched_publishers(self.node, sub, kind)
            except Exception:  # noqa: BLE001 - destroyed under the diagnostics timer (deactivate)
                continue
        return unmatched

    def _on_message_lost(self, info) -> None:
        self.stats.lost_in_transport += int(info.total_count_change)

    # ---- executor side (fast) ------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        job = Job(msg, self.node.get_clock().now().nanoseconds, time.monotonic())
        job.after_gap = job.received_mono - self._last_image_at > IMAGE_GAP_S
        self._last_image_at = job.received_mono
        self.stats.rate_in.tick()
        with self._lock:
            if self._slot is not None:
                self.stats.dropped += 1
                job.after_gap = job.after_gap or self._slot.after_gap   # the gap survives a dropped frame
            self._slot = job
            self._lock.notify()
        # Hand the GIL over now: the woken worker starts the frame at once instead of after the executor's
        # next pass of Python (bench_node_overhead: wait p50 0.52-0.72 -> 0.11-0.12 ms).
        time.sleep(0)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_cond:
            self.infos.append(msg)
            if stamp_ns(msg.header.stamp) == self._frame_stamp:   # the frame in the worker's, come after it
                self._frame_info = msg
            if stamp_ns(msg.header.stamp) in self._missed_stamps:   # it matches, only late: worth waiting again
                self._info_misses = 0
            self._last_info_at = time.monotonic()
            self._info_cond.notify_all()

    def take(self) -> Job | None:
        """Called with the node lock held."""
        job, self._slot = self._slot, None
        return job

    def destroy(self) -> None:
        """Remove this camera's subscriptions and publishers (lifecycle deactivate)."""
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        with self._pubs_lock:
            for pub in [*self.pubs.values(), self.pub_info]:
                if pub is not None:
                    self.node.destroy_publisher(pub)
            self._subs, self.pubs, self.pub_info = [], {}, None

    # ---- worker side ---------------------------------------------------------------------------
    def convert(self, msg, max_pixels: int):
        """The message as RGB uint8 (raises ImageError on bad input); its size is kept for the CameraInfo
        check (a CompressedImage tells it only once decoded)."""
        self._hold_info(msg.header)
        if isinstance(msg, CompressedImage):
            rgb = compressed_msg_to_rgb8(msg, max_pixels)
        else:
            rgb = image_msg_to_rgb8(msg, max_pixels)
        self._image_size = (rgb.shape[1], rgb.shape[0])
        return rgb

    def _hold_info(self, header) -> None:
        """The frame starting now keeps its CameraInfo (cached, or when it comes) until the next frame starts,
        however many newer ones push it out of the cache meanwhile."""
        target = stamp_ns(header.stamp)
        with self._info_cond:
            self._frame_stamp = target
            self._frame_info = newest_with_stamp(self.infos, target)

    def subscribed(self, name: str) -> bool:
        """Someone listens to output ``name`` (no one once destroyed)."""
        with self._pubs_lock:
            pub = self.pubs.get(name)
            return pub is not None and pub.get_subscription_count() > 0

    def publish(self, header, images: dict) -> None:
        """{output name: (image, encoding)} with the input's header; nothing once destroyed."""
        with self._pubs_lock:
            for name, (image, encoding) in images.items():
                if name in self.pubs:
                    self.pubs[name].publish(array_to_image_msg(image, encoding, header))

    def matching_info(self, header, after_gap: bool = False) -> CameraInfo | None:
        """Fallback synchroniser: the cached CameraInfo with this exact stamp, waiting briefly for it only
        while it can still come (a silent camera_info topic must not cost every frame the wait).
        ``after_gap``: the frame is the first after a silence of the images (``Job.after_gap``)."""
        target = stamp_ns(header.stamp)

        def found():
            held = self._frame_info
            if held is not None and stamp_ns(held.header.stamp) == target:
                return held
            return newest_with_stamp(self.infos, target)
        with self._info_cond:
            info = found()
            if after_gap:   # a (re)started camera: its CameraInfos may match now
                self._info_misses = 0
            # the publisher count only where it decides: a first frame of a camera that never had camera_info
            publishers = self._info_publishers() if info is None and after_gap and not self.infos else 0
            if (info is None and self._info_misses < INFO_MISSES_NO_WAIT
                    and info_may_come(self.infos, self._last_info_at, target, time.monotonic(), after_gap, publishers)):
                self._info_cond.wait_for(lambda: found() is not None, timeout=CAMERA_INFO_WAIT_S)
                info = found()
                self._info_misses += info is None
            if info is None:
                self._missed_stamps.append(target)
            else:
                self._info_misses = 0
            return info

    def _info_publishers(self) -> int:
        """Publishers matched on our camera_info topic (0 without it, or once destroyed)."""
        try:
            return self._info_sub.get_publisher_count() if self._info_sub is not None else 0
        except Exception:  # noqa: BLE001 - destroyed under a worker that deactivate gave up waiting for
            return 0

    def publish_camera_info(self, header, mask_hw, max_pixels: int, after_gap: bool = False) -> None:
        """The CameraInfo of the frame last converted, scaled to the mask size; a missing or bad one (one
        that describes another image size included) is a warning, not a failure.
        ``max_pixels``: the current ``max_input_pixels`` (a run-time setting, as for the images);
        ``after_gap``: the frame is the first after a silence of the images (``Job.after_gap``)."""
        info = self.matching_info(header, after_gap)
        if info is None:
            self.stats.log_error('camera_info', f'no camera_info with stamp {stamp_ns(header.stamp)} on this '
                                                f'camera', True)
            return
        if info.header.frame_id != header.frame_id:
            self.stats.log_error('camera_info', f'camera_info frame_id {short(info.header.frame_id)} does not '
                                                f'match the image\'s {short(header.frame_id)} (unknown camera)', True)
            return
        problem = (camera_info_problem(info.width, info.height, info.k, info.d, info.r, info.p, max_pixels)
                   or camera_info_size_problem(camera_info_image_size(info), self._image_size))
        if problem:
            self.stats.log_error('camera_info', problem, True)
            return
        with self._pubs_lock:
            if self.pub_info is not None:   # None once destroyed
                self.pub_info.publish(scale_camera_info(info, mask_hw[1], mask_hw[0], header))


def info_may_come(infos, last_info_at: float, target_ns: int, now: float, after_gap: bool = False,
                  info_publishers: int = 0) -> bool:
    """Worth waiting (``CAMERA_INFO_WAIT_S``) for a frame's CameraInfo: infos are flowing and none has passed
    the frame's stamp yet (they come in stamp order, so a newer one means this frame's was lost); or the
    frame is the first after a silence of the images (``after_gap``) of a camera that had camera_info: a
    restarted driver starts camera_info again with its images, so its silence says nothing yet, and the
    cached stamps, from before the restart, cannot be compared. A camera that never had one waits only on
    such a first frame (start-up included) and only while ``info_publishers`` (matched on camera_info) > 0:
    its first CameraInfo may come a moment after its first image (that frame went out without one), and
    a camera with no camera_info publisher, or one that never sends, costs one wait per gap, no more."""
    if not infos:
        return after_gap and info_publishers > 0
    if now - last_info_at > CAMERA_INFO_ALIVE_S:
        return after_gap
    return stamp_ns(infos[-1].header.stamp) < target_ns
