"""One camera served by the segment node: input mailbox, engine state, outputs and statistics."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vidseg_ros.data.images import ImageError, clip, short
from vidseg_ros.engine.outputs import ClassTable, Renderer
from vidseg_ros.engine.upsample import to_u8
from vidseg_ros.ros import diagnostics, health
from vidseg_ros.ros.conversions import (array_to_image_msg, compressed_msg_to_rgb8, image_msg_to_rgb8,
                                        scale_camera_info)
from vidseg_ros.ros.guards import ErrorThrottle, camera_info_problem, stamp_is_sane
from vidseg_ros.ros.params import qos_profile
from vidseg_ros.ros.settings import SegmentNodeConfig
from vidseg_ros.ros.stats import LatencyStats, RateMeter

CAMERA_INFO_CACHE = 30   # recent CameraInfo messages kept for matching by stamp
CAMERA_INFO_WAIT_S = 0.1  # how long the worker waits for the CameraInfo of a frame that came first
ERROR_HOLD_S = 5.0        # how long an error keeps the camera's diagnostic at WARN

def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class Job:
    msg: object
    received_ns: int     # node clock when the callback parked the message
    received_mono: float


class CameraStream:
    """Subscriptions, one-slot mailbox, engine fork, publishers and stats of one camera namespace."""

    def __init__(self, node, namespace: str, engine, lock: threading.Condition, cfg: SegmentNodeConfig):
        self.node = node
        self.name = namespace or 'image'
        self.engine = engine
        self._lock = lock   # the segmenter's condition: parking a frame wakes the inference worker
        self.cfg = cfg      # start-up settings (topics, QoS); per-frame settings come with process()
        prefix = f'{namespace}/' if namespace else ''
        out = f'~/{namespace}/' if namespace else '~/'
        in_qos = qos_profile(cfg.input_reliability, cfg.input_depth)
        out_qos = qos_profile(cfg.output_reliability, cfg.output_depth)
        image_type, image_topic = ((CompressedImage, prefix + 'image/compressed') if cfg.transport == 'compressed'
                                   else (Image, prefix + 'image'))
        self.pub_info = None
        self.infos: deque = deque(maxlen=CAMERA_INFO_CACHE)
        # CameraInfo is matched to its image by exact stamp in the worker (_matching_info), not with
        # message_filters: its synchroniser raises inside the executor on a stamp it cannot convert
        # (negative seconds), which would stop the node; one matching path, tested with and without it.
        self._subs = [self._subscribe(lambda **kw: node.create_subscription(
            image_type, image_topic, self._on_image, in_qos, **kw))]
        if cfg.use_camera_info:
            self._subs.append(node.create_subscription(CameraInfo, prefix + 'camera_info',
                                                       self._on_camera_info, in_qos))
        if cfg.use_camera_info:
            self.pub_info = node.create_publisher(CameraInfo, out + 'camera_info', out_qos)
        self.pub_mask = node.create_publisher(Image, out + 'mask', out_qos)
        self.pub_color = node.create_publisher(Image, out + 'color_mask', out_qos)
        self.pub_overlay = node.create_publisher(Image, out + 'overlay', out_qos)
        self.pub_confidence = node.create_publisher(Image, out + 'confidence', out_qos)
        self.pub_class_prob = node.create_publisher(Image, out + 'class_prob', out_qos)
        self._slot: Job | None = None
        self._reset_requested = False
        self.latency = LatencyStats()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.dropped = 0           # frames replaced in the mailbox before the worker took them
        self.bad_inputs = 0
        self.errors: dict[str, int] = {}
        self.last_error = ''
        self._last_error_mono = -1e9
        self.frames = 0
        self.key_frames = 0
        self.published_errors = 0
        self.lost_in_transport = 0   # reported by the RMW (message-lost event), never reached the callback
        self.bad_stamps = 0
        self.outcomes = health.Outcomes()
        self._throttle = ErrorThrottle()
        self._throttle_s = cfg.error_throttle_s
        self._info_cond = threading.Condition()

    def _subscribe(self, create):
        """``create(**kwargs)`` with a message-lost callback, so messages the middleware reports lost
        before our callback are counted (`lost_in_transport`); without it where the RMW cannot."""
        try:
            return create(event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_message_lost))
        except UnsupportedEventTypeError:
            return create()

    def _on_message_lost(self, info) -> None:
        self.lost_in_transport += int(info.total_count_change)

    # ---- executor side (fast) ------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        job = Job(msg, self.node.get_clock().now().nanoseconds, time.monotonic())
        self.rate_in.tick()
        with self._lock:
            if self._slot is not None:
                self.dropped += 1
            self._slot = job
            self._lock.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_cond:
            self.infos.append(msg)
            self._info_cond.notify_all()

    def destroy(self) -> None:
        """Remove this camera's subscriptions and publishers (lifecycle deactivate)."""
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        for pub in (self.pub_mask, self.pub_color, self.pub_overlay, self.pub_confidence, self.pub_class_prob,
                    self.pub_info):
            if pub is not None:
                self.node.destroy_publisher(pub)
        self._subs = []

    def take(self) -> Job | None:
        """Called with the node lock held."""
        job, self._slot = self._slot, None
        return job

    def request_reset(self) -> None:
        self._reset_requested = True

    # ---- worker side ---------------------------------------------------------------------------
    def note_error(self, kind: str, text: str) -> None:
        """Count an error of ``kind`` and keep its (truncated) text for /diagnostics."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = f'{kind}: {clip(text)}'
        self._last_error_mono = time.monotonic()

    def log_error(self, kind: str, text: str, warn: bool = False) -> None:
        """Count and log, throttled per kind on this camera (rclpy throttles per call site, which
        would let a flood of one kind hide every other)."""
        self.note_error(kind, text)
        allowed, suppressed = self._throttle.allow(kind, self._throttle_s)
        if allowed:
            more = f' ({suppressed} more since the last report)' if suppressed else ''
            log = self.node.get_logger()
            (log.warning if warn else log.error)(f'[{self.name}] {self.last_error}{more}')

    def _convert(self, msg, max_pixels: int):
        if isinstance(msg, CompressedImage):
            return compressed_msg_to_rgb8(msg, max_pixels)
        return image_msg_to_rgb8(msg, max_pixels)

    def process(self, job: Job, cfg: SegmentNodeConfig, table: ClassTable) -> None:
        """Convert, segment, render and publish one frame; never raises (every failure is counted)."""
        self._throttle_s = cfg.error_throttle_s
        try:
            ok = self._process(job, cfg, table)
        except Exception as e:  # noqa: BLE001 - a bug on one frame must not end the worker
            self.log_error('internal', f'{type(e).__name__}: {e}')
            ok = False
        self.outcomes.add(ok)

    def _process(self, job: Job, cfg: SegmentNodeConfig, table: ClassTable) -> bool:
        t0 = time.perf_counter()
        wait_ms = (time.monotonic() - job.received_mono) * 1e3   # in the mailbox while the worker was busy
        msg = job.msg
        try:
            rgb = self._convert(msg, cfg.max_input_pixels)
        except Exception as e:  # noqa: BLE001 - ImageError, or a decoder failure we did not foresee
            self.bad_inputs += 1
            self.log_error('bad_input', str(e) if isinstance(e, ImageError) else f'{type(e).__name__}: {e}')
            return False
        t_convert = time.perf_counter()
        if self._reset_requested:
            self._reset_requested = False
            self.engine.reset('reset service')
        want_conf = cfg.publish_confidence and self.pub_confidence.get_subscription_count() > 0
        want_prob = cfg.class_prob_index >= 0 and self.pub_class_prob.get_subscription_count() > 0
        output_hw = None if cfg.mask_resolution == 'input' else tuple(self.engine.net_hw)
        try:
            result = self.engine.step(rgb, stamp_ns(msg.header.stamp), want_confidence=want_conf,
                                      class_prob=cfg.class_prob_index if want_prob else None,
                                      output_hw=output_hw, confidence_u8=cfg.confidence_encoding == 'mono8')
        except Exception as e:  # noqa: BLE001 - e.g. device out of memory, cv2.error: keep serving
            self.log_error('engine', f'{type(e).__name__}: {e}')
            return False
        t_step = time.perf_counter()
        try:
            self._publish(msg.header, rgb, result, cfg, table)
            if self.pub_info is not None:
                self._publish_camera_info(msg.header, result.class_ids.shape)
        except Exception as e:  # noqa: BLE001 - rclpy raises RCLError on publish under load
            self.published_errors += 1
            self.log_error('publish', str(e))
            return False
        t_pub = time.perf_counter()
        self.frames += 1
        self.key_frames += int(result.is_key)
        timings = dict(result.timings_ms)
        timings['convert'] = (t_convert - t0) * 1e3
        timings['publish'] = (t_pub - t_step) * 1e3
        timings['wait'] = wait_ms
        timings['in_node'] = (time.monotonic() - job.received_mono) * 1e3
        timings['process'] = (t_pub - t0) * 1e3   # the worker's time for this frame
        model_ms = result.timings_ms.get('model', 0.0)
        timings['model_key' if result.is_key else 'model_current'] = model_ms
        stamp = stamp_ns(msg.header.stamp)
        now_ns = self.node.get_clock().now().nanoseconds
        if stamp_is_sane(stamp, now_ns):
            timings['transport'] = (job.received_ns - stamp) / 1e6  # stamp -> our callback
            timings['end_to_end'] = (now_ns - stamp) / 1e6
            # What the ROS side adds (transport in, conversion, publishing): end-to-end minus the engine's
            # work and minus the wait for a busy worker (that wait is the model's, not the adapter's).
            timings['overhead'] = timings['end_to_end'] - sum(result.timings_ms.values()) - wait_ms
        else:  # stamp 0, another clock: the frame is served, its "latency" kept out of the statistics
            self.bad_stamps += 1
        self.latency.add_all(timings)
        self.rate_out.tick()
        return True

    def _publish(self, header, rgb, result, cfg: SegmentNodeConfig, table: ClassTable) -> None:
        def send(pub, image, encoding):
            pub.publish(array_to_image_msg(image, encoding, header))

        renderer = getattr(self, '_renderer', None)
        if renderer is None or renderer.table is not table:   # lookup tables built once per class table
            renderer = self._renderer = Renderer(table)
        pubs = {'mask': (cfg.publish_mask, self.pub_mask, 'mono8'),
                'color': (cfg.publish_color_mask, self.pub_color, 'rgb8'),
                'overlay': (cfg.publish_overlay, self.pub_overlay, 'rgb8')}
        want = {k for k, (on, pub, _) in pubs.items() if on and pub.get_subscription_count()}
        for name, image in renderer.render(result, rgb, cfg.overlay_alpha, want).items():
            if name in want:
                send(pubs[name][1], image, pubs[name][2])
        if result.confidence is not None and self.pub_confidence.get_subscription_count():
            conf = result.confidence
            if cfg.confidence_encoding == 'mono8':
                send(self.pub_confidence, conf if conf.dtype == np.uint8 else to_u8(conf), 'mono8')
            else:
                send(self.pub_confidence, conf / np.float32(255) if conf.dtype == np.uint8 else conf, '32FC1')
        if result.class_prob is not None and self.pub_class_prob.get_subscription_count():
            send(self.pub_class_prob, result.class_prob, '32FC1')

    def _matching_info(self, header) -> CameraInfo | None:
        """Fallback synchroniser: the cached CameraInfo with this exact stamp, waiting briefly for it."""
        target = stamp_ns(header.stamp)
        with self._info_cond:
            self._info_cond.wait_for(lambda: any(stamp_ns(i.header.stamp) == target for i in self.infos),
                                     timeout=CAMERA_INFO_WAIT_S)
            return next((i for i in reversed(self.infos) if stamp_ns(i.header.stamp) == target), None)

    def _publish_camera_info(self, header, mask_hw) -> None:
        info = self._matching_info(header)
        if info is None:
            self.log_error('camera_info', f'no camera_info with stamp {stamp_ns(header.stamp)} on this camera', True)
            return
        if info.header.frame_id != header.frame_id:
            self.log_error('camera_info', f'camera_info frame_id {short(info.header.frame_id)} does not match the '
                                          f'image\'s {short(header.frame_id)} (unknown camera)', True)
            return
        problem = camera_info_problem(info.width, info.height, info.k, info.d, info.r, info.p,
                                      self.cfg.max_input_pixels)
        if problem:
            self.log_error('camera_info', problem, True)
            return
        self.pub_info.publish(scale_camera_info(info, mask_hw[1], mask_hw[0], header))

    # ---- diagnostics ---------------------------------------------------------------------------
    def diagnostic_status(self, engine_cfg, worker: health.CameraHealth):
        """This camera's status; ``worker`` carries the shared worker's state, filled in here."""
        summary = self.latency.summary()
        values = {
            'camera': self.name, 'model': self.engine.model_name, 'device': self.engine.device,
            'precision': engine_cfg.precision, 'trained': getattr(self.engine, 'trained', True),
            'input_rate_hz': self.rate_in.rate_hz(), 'output_rate_hz': self.rate_out.rate_hz(),
            'frames_in': self.rate_in.total, 'frames_out': self.frames, 'dropped_frames': self.dropped,
            'lost_in_transport': self.lost_in_transport, 'bad_inputs': self.bad_inputs,
            'bad_stamps': self.bad_stamps, 'publish_errors': self.published_errors,
            'key_frames': self.key_frames,
            'key_frame_ratio': self.key_frames / self.frames if self.frames else 0.0,
            'keyframe_policy': engine_cfg.keyframe_policy, 'keyframe_interval': engine_cfg.keyframe_interval,
        }
        values.update({f'errors_{k}': v for k, v in list(self.errors.items())})  # the worker may add a kind meanwhile
        values.update(diagnostics.latency_values(summary))
        # An error keeps the status at WARN for a while, so monitors polling slowly still see it.
        recent_error = time.monotonic() - self._last_error_mono < max(ERROR_HOLD_S, 3 * self.cfg.diagnostics_period_s)
        worker.frame_ms = summary.get('process', {}).get('p50', 0.0)
        worker.input_hz, worker.output_hz = values['input_rate_hz'], values['output_rate_hz']
        worker.recent_frames, worker.recent_rejected = self.outcomes.recent()
        worker.recent_error = self.last_error if recent_error else ''
        worker.trained, worker.frames_out = bool(values['trained']), self.frames
        level, message = health.assess(worker)
        if level == health.OK and self.frames:
            e2e = summary.get('end_to_end', {}).get('p50', 0.0)
            message = f'{self.rate_out.rate_hz():.1f} Hz, end-to-end p50 {e2e:.1f} ms'
        return diagnostics.status(f'{self.node.get_name()}: {self.name}', self.name, diagnostics.LEVELS[level],
                                  message, values)
