"""Statistics of one camera of the segment node: counters, latency, rates, throttled error log and its
/diagnostics status."""
from __future__ import annotations

import time

from vidseg_ros.data.images import clip
from vidseg_ros.ros import diagnostics, health
from vidseg_ros.ros.guards import ErrorThrottle, stamp_is_sane
from vidseg_ros.ros.stats import LatencyStats, RateMeter

ERROR_HOLD_S = 5.0        # how long an error keeps the camera's diagnostic at WARN


class CameraStats:
    """What happened to one camera's frames; the IO side counts arrivals and losses, the worker the rest."""

    def __init__(self, node, name: str, throttle_s: float):
        self.node, self.name = node, name
        self.throttle_s = throttle_s
        self.latency = LatencyStats()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.dropped = 0             # frames replaced in the mailbox before the worker took them
        self.lost_in_transport = 0   # reported by the RMW (message-lost event), never reached the callback
        self.bad_inputs = 0
        self.bad_stamps = 0
        self.clock_skew_stamps = 0    # stamps ahead of our clock on arrival: the sender's clock runs ahead
        self.clock_skew_ms_max = 0.0
        self.published_errors = 0
        self.frames = 0
        self.key_frames = 0
        self.key_reasons: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.last_error = ''
        self._last_error_mono = -1e9
        self.outcomes = health.Outcomes()
        self._throttle = ErrorThrottle()

    # ---- errors --------------------------------------------------------------------------------
    def note_error(self, kind: str, text: str) -> None:
        """Count an error of ``kind`` and keep its (truncated) text for /diagnostics."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = f'{kind}: {clip(text)}'
        self._last_error_mono = time.monotonic()

    def log_error(self, kind: str, text: str, warn: bool = False) -> None:
        """Count and log, throttled per kind on this camera (rclpy throttles per call site, which
        would let a flood of one kind hide every other)."""
        self.note_error(kind, text)
        allowed, suppressed = self._throttle.allow(kind, self.throttle_s)
        if allowed:
            more = f' ({suppressed} more since the last report)' if suppressed else ''
            log = self.node.get_logger()
            (log.warning if warn else log.error)(f'[{self.name}] {self.last_error}{more}')

    # ---- frames --------------------------------------------------------------------------------
    def frame_done(self, result, timings: dict[str, float], stamp_ns: int, received_ns: int) -> None:
        """One frame served: key-frame counts per reason, and the worker's ``timings`` (ms) plus the
        stamp-based ones (transport, end to end, overhead) when the stamp is on this machine's clock."""
        self.frames += 1
        if result.is_key:
            self.key_frames += 1
            reason = result.key_reason or 'unknown'
            self.key_reasons[reason] = self.key_reasons.get(reason, 0) + 1
        timings = {**result.timings_ms, **timings}
        timings['model_key' if result.is_key else 'model_current'] = result.timings_ms.get('model', 0.0)
        self._add_stamp_timings(timings, result, stamp_ns, received_ns)
        self.latency.add_all(timings)
        self.rate_out.tick()

    def _add_stamp_timings(self, timings: dict[str, float], result, stamp_ns: int, received_ns: int) -> None:
        """Transport, end to end and overhead (ms) into ``timings`` when the stamp is on this machine's
        clock and not ahead of it; else counted (bad_stamps, clock_skew_stamps) and kept out."""
        now_ns = self.node.get_clock().now().nanoseconds
        if not stamp_is_sane(stamp_ns, now_ns):
            # stamp 0, another clock: the frame is served, its "latency" kept out of the statistics
            self.bad_stamps += 1
        elif stamp_ns > received_ns:
            # a negative latency is the clocks' disagreement, not a latency: counted as such, kept out
            self.clock_skew_stamps += 1
            self.clock_skew_ms_max = max(self.clock_skew_ms_max, (stamp_ns - received_ns) / 1e6)
        else:
            timings['transport'] = (received_ns - stamp_ns) / 1e6  # stamp -> our callback
            timings['end_to_end'] = (now_ns - stamp_ns) / 1e6
            # What the ROS side adds (transport in, conversion, publishing): end-to-end minus the engine's
            # work and minus the wait for a busy worker (that wait is the model's, not the adapter's).
            timings['overhead'] = timings['end_to_end'] - sum(result.timings_ms.values()) - timings['wait']

    # ---- diagnostics ---------------------------------------------------------------------------
    def diagnostic_status(self, engine, engine_cfg, worker: health.CameraHealth, period_s: float):
        """This camera's status; ``worker`` carries the shared worker's state, filled in here."""
        summary = self.latency.summary()
        values = {
            'camera': self.name, 'model': engine.model_name, 'device': engine.device,
            'precision': engine_cfg.precision, 'trained': getattr(engine, 'trained', True),
            'input_rate_hz': self.rate_in.rate_hz(), 'output_rate_hz': self.rate_out.rate_hz(),
            'frames_in': self.rate_in.total, 'frames_out': self.frames, 'dropped_frames': self.dropped,
            'lost_in_transport': self.lost_in_transport, 'bad_inputs': self.bad_inputs,
            'bad_stamps': self.bad_stamps, 'clock_skew_stamps': self.clock_skew_stamps,
            'clock_skew_ms_max': self.clock_skew_ms_max, 'publish_errors': self.published_errors,
            'key_frames': self.key_frames,
            'key_frame_ratio': self.key_frames / self.frames if self.frames else 0.0,
            'keyframe_policy': engine_cfg.keyframe_policy, 'keyframe_interval': engine_cfg.keyframe_interval,
        }
        # copies: the worker may add a reason or an error kind meanwhile
        values.update({f'key_reason_{k}': v for k, v in sorted(dict(self.key_reasons).items())})
        values.update({f'errors_{k}': v for k, v in list(self.errors.items())})
        values.update(diagnostics.latency_values(summary))
        # An error keeps the status at WARN for a while, so monitors polling slowly still see it.
        recent_error = time.monotonic() - self._last_error_mono < max(ERROR_HOLD_S, 3 * period_s)
        worker.frame_ms = summary.get('process', {}).get('p50', 0.0)
        worker.input_hz, worker.output_hz = values['input_rate_hz'], values['output_rate_hz']
        worker.recent_frames, worker.recent_rejected = self.outcomes.recent()
        worker.recent_error = self.last_error if recent_error else ''
        worker.trained, worker.frames_out = bool(values['trained']), self.frames
        level, message = health.assess(worker)
        if level == health.OK and self.frames:
            e2e = summary.get('end_to_end', {}).get('p50', 0.0)
            message = f'{self.rate_out.rate_hz():.1f} Hz, end-to-end p50 {e2e:.1f} ms'
        # the fully qualified name: two segmenters in /a and /b both said "vidseg_segmenter: image"
        name = f'{self.node.get_fully_qualified_name()}: {self.name}'
        return diagnostics.status(name, self.name, diagnostics.LEVELS[level], message, values)
