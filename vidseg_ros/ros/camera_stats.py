"""Statistics of one camera of the segment node: counters, latency, rates, throttled error log and its
/diagnostics status."""
from __future__ import annotations

import time

from rclpy.clock import JumpThreshold
from rclpy.duration import Duration

from vidseg_ros.data.images import clip
from vidseg_ros.ros import diagnostics, health
from vidseg_ros.ros.guards import BAD_STAMP_S, ErrorThrottle, stamp_is_sane
from vidseg_ros.ros.stats import LatencyStats, RateMeter

ERROR_HOLD_S = 5.0        # how long an error keeps the camera's diagnostic at WARN
# A /clock step beyond this (a bag player seeking, a paused simulator resuming) is a jump, not the clock's
# resolution: it widens no skew tolerance.
MAX_CLOCK_STEP_S = 1.0
CLOCK_STEPS_KEPT = 4      # the tolerance is the largest of the last few steps (a bag player's /clock jitters)


class ClockStep:
    """How far the node clock moves per /clock message under use_sim_time (its resolution).

    The node clock holds the last /clock value until the next one, while a camera stamps with the clock
    source's time now: a correctly stamped frame reaches us up to one step "ahead" (100 ms at a 10 Hz /clock)
    and was counted as clock skew. Measured on the clock's forward-jump callbacks, which rcl calls on every
    /clock message that moves the clock forward (also what rclpy's ``sleep_until`` relies on).
    """

    def __init__(self, clock):
        self._steps: tuple[int, ...] = ()   # replaced whole, never mutated: the worker thread reads it
        threshold = JumpThreshold(min_forward=Duration(nanoseconds=1), min_backward=None, on_clock_change=False)
        self._handle = clock.create_jump_callback(threshold, post_callback=self._on_jump)

    def _on_jump(self, jump) -> None:
        step = jump.delta.nanoseconds
        if step <= MAX_CLOCK_STEP_S * 1e9:   # the first /clock (from 0) and seeks are no step
            self._steps = (*self._steps[-(CLOCK_STEPS_KEPT - 1):], step)

    def tolerance_ns(self) -> int:
        """The largest recent step (ns); 0 before two /clock messages came."""
        return max(self._steps, default=0)


class CameraStats:
    """What happened to one camera's frames; the IO side counts arrivals and losses, the worker the rest."""

    def __init__(self, node, name: str, throttle_s: float, clock_step: ClockStep | None = None):
        self.node, self.name = node, name
        self.clock_step = clock_step  # under sim time, stamps up to one /clock step ahead are no skew
        self.throttle_s = throttle_s
        self.latency = LatencyStats()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.dropped = 0             # frames replaced in the mailbox before the worker took them
        self.lost_in_transport = 0   # reported by the RMW (message-lost event), never reached the callback
        self.bad_inputs = 0
        self.bad_stamps = 0
        self.clock_skew_stamps = 0    # stamps ahead of our clock on arrival (under sim time: by over a /clock step)
        self.clock_skew_ms_max = 0.0
        self.no_clock_frames = 0      # use_sim_time and no /clock yet: the node clock reads 0, nothing to measure
        self.incompatible_policy = ''  # the QoS policy of the last publisher reported incompatible ('' = none)
        self._said_no_clock = False
        self.sim_time = False         # the node clock is /clock (use_sim_time): stamp latencies are in sim time
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
        clock and not ahead of it; else counted (bad_stamps, clock_skew_stamps, no_clock_frames) and kept out.

        The stamp latencies are on the node clock, as ROS compares stamps (with use_sim_time: /clock, so a
        replay at 10x reports 10x the wall latency; `latency_clock` says which). The overhead is left out under
        sim time: it subtracts the engine's wall-clock times and read -15 ms at 0.1x, +347 ms at 10x.

        Under sim time the node clock moves in /clock steps, so a stamp up to one step (``ClockStep``) ahead is
        the clock's resolution, not skew: its latencies are below that resolution and read 0."""
        clock = self.node.get_clock()
        self.sim_time = bool(getattr(clock, 'ros_time_is_active', False))
        now_ns = clock.now().nanoseconds
        tolerance_ns = self.clock_step.tolerance_ns() if self.sim_time and self.clock_step else 0
        if self.sim_time and not received_ns:
            self._no_clock()   # not the stamp's fault: there is no time yet to compare it with
        elif not stamp_is_sane(stamp_ns, now_ns):
            # stamp 0, another clock: the frame is served, its "latency" kept out of the statistics
            self.bad_stamps += 1
        elif stamp_ns > received_ns + tolerance_ns:
            # a negative latency is the clocks' disagreement, not a latency: counted as such, kept out
            self.clock_skew_stamps += 1
            self.clock_skew_ms_max = max(self.clock_skew_ms_max, (stamp_ns - received_ns) / 1e6)
        else:
            timings['transport'] = max(received_ns - stamp_ns, 0) / 1e6  # stamp -> our callback
            timings['end_to_end'] = max(now_ns - stamp_ns, 0) / 1e6
            if not self.sim_time:
                # What the ROS side adds (transport in, conversion, publishing): end-to-end minus the engine's
                # work and minus the wait for a busy worker (that wait is the model's, not the adapter's).
                timings['overhead'] = timings['end_to_end'] - sum(result.timings_ms.values()) - timings['wait']

    def _no_clock(self) -> None:
        """A frame while use_sim_time is set and no /clock has come: counted, said once (WARN)."""
        self.no_clock_frames += 1
        if not self._said_no_clock:
            self._said_no_clock = True
            self.node.get_logger().warning(
                f'[{self.name}] use_sim_time is set and no /clock has arrived: masks are published, latency is '
                f'not measured (no_clock_frames) until /clock runs (start the clock source, e.g. the bag player)')

    def _latency_message(self, summary: dict) -> str:
        """The OK message: rate and end-to-end p50, or why end-to-end is not measured (it read '0.0 ms')."""
        rate = f'{self.rate_out.rate_hz():.1f} Hz'
        if 'end_to_end' in summary:
            return f'{rate}, end-to-end p50 {summary["end_to_end"]["p50"]:.1f} ms'
        if self.sim_time and not self.node.get_clock().now().nanoseconds:
            why = 'use_sim_time is set and no /clock has arrived'
        elif self.bad_stamps and self.bad_stamps >= self.clock_skew_stamps:
            why = (f'{self.bad_stamps} stamp(s) more than {BAD_STAMP_S:.0f} s from the node clock (zero or another '
                   f'clock)')
        elif self.clock_skew_stamps:
            why = f'{self.clock_skew_stamps} stamp(s) ahead of the node clock (up to {self.clock_skew_ms_max:.0f} ms)'
        else:
            why = 'no frame came after /clock started'
        return f'{rate}, end-to-end not measured: {why}'

    # ---- diagnostics ---------------------------------------------------------------------------
    def diagnostic_status(self, engine, engine_cfg, worker: health.CameraHealth, period_s: float,
                          unmatched: int = 0):
        """This camera's status; ``worker`` carries the shared worker's state, filled in here. ``unmatched``:
        publishers on this camera's inputs that DDS does not match with us (incompatible QoS)."""
        summary = self.latency.summary()
        values = {
            'camera': self.name, 'model': engine.model_name, 'device': engine.device,
            **engine.threads,   # torch_threads or onnx_threads: the count the model runs at (num_threads)
            'precision': engine_cfg.precision, 'trained': getattr(engine, 'trained', True),
            'input_rate_hz': self.rate_in.rate_hz(), 'output_rate_hz': self.rate_out.rate_hz(),
            'frames_in': self.rate_in.total, 'frames_out': self.frames, 'dropped_frames': self.dropped,
            'lost_in_transport': self.lost_in_transport, 'bad_inputs': self.bad_inputs,
            'bad_stamps': self.bad_stamps, 'clock_skew_stamps': self.clock_skew_stamps,
            'clock_skew_ms_max': self.clock_skew_ms_max, 'no_clock_frames': self.no_clock_frames,
            'latency_clock': 'sim' if self.sim_time else 'system', 'publish_errors': self.published_errors,
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
        if unmatched:
            worker.unmatched = (f'{unmatched} publisher(s) NOT received: QoS incompatible with ours '
                                f'({self.incompatible_policy}); see input_reliability')
        level, message = health.assess(worker)
        if level == health.OK and self.frames:
            message = self._latency_message(summary)
        return diagnostics.status(self.status_name(), self.name, diagnostics.LEVELS[level], message, values)

    def status_name(self) -> str:
        """The name of this camera's status: the node's fully qualified name (two segmenters in /a and /b both
        said "vidseg_segmenter: image") and the camera."""
        return f'{self.node.get_fully_qualified_name()}: {self.name}'

    def stale_status(self, message: str):
        """This camera's last status when it stops being served (deactivate, exit): STALE, with its totals. Without
        it monitors kept showing the last periodic status for good, an ERROR 'stuck' among them."""
        return diagnostics.status(self.status_name(), self.name, diagnostics.STALE, message, {
            'camera': self.name, 'frames_in': self.rate_in.total, 'frames_out': self.frames,
            'dropped_frames': self.dropped, 'bad_inputs': self.bad_inputs})
