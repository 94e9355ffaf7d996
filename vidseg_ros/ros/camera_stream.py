"""One camera served by the segment node: convert, segment, render and publish a frame.

The parts live beside it: topics and mailbox in ``camera_io``, counters and /diagnostics in
``camera_stats``, the published images (one table, ROS-free) in ``engine.outputs``.
"""
from __future__ import annotations

import threading
import time

from vidseg_ros.data.images import ImageError
from vidseg_ros.engine.outputs import (ClassTable, Renderer, active_outputs, published_hw, render_outputs,
                                      step_options)
from vidseg_ros.ros import health
from vidseg_ros.ros.camera_io import CameraIO, Job, stamp_ns
from vidseg_ros.ros.camera_stats import CameraStats, ClockStep
from vidseg_ros.ros.settings import SegmentNodeConfig


class CameraStream:
    """Topics (``io``), statistics (``stats``) and the engine fork of one camera namespace."""

    def __init__(self, node, namespace: str, engine, lock: threading.Condition, cfg: SegmentNodeConfig,
                 clock_step: ClockStep | None = None):
        self.name = namespace or 'image'
        self.engine = engine
        self.cfg = cfg      # start-up settings (topics, QoS); per-frame settings come with process()
        self.stats = CameraStats(node, self.name, cfg.error_throttle_s, clock_step)
        self.io = CameraIO(node, namespace, lock, cfg, self.stats)
        self._reset_requested = False
        self._renderer: Renderer | None = None
        self.stage = ''     # what the worker does with this camera's frame now (named when it is stuck)
        self.take, self.destroy = self.io.take, self.io.destroy
        self.note_error, self.log_error = self.stats.note_error, self.stats.log_error

    def request_reset(self) -> None:
        """The next frame of this camera is a key frame with state cleared (reason 'reset')."""
        self._reset_requested = True

    def process(self, job: Job, cfg: SegmentNodeConfig, table: ClassTable) -> None:
        """Convert, segment, render and publish one frame; never raises (every failure is counted)."""
        self.stats.throttle_s = cfg.error_throttle_s
        try:
            ok = self._process(job, cfg, table)
        except Exception as e:  # noqa: BLE001 - a bug on one frame must not end the worker
            self.log_error('internal', f'{type(e).__name__}: {e}')
            ok = False
        self.stats.outcomes.add(ok)

    def _process(self, job: Job, cfg: SegmentNodeConfig, table: ClassTable) -> bool:
        t0 = time.perf_counter()
        wait_ms = (time.monotonic() - job.received_mono) * 1e3   # in the mailbox while the worker was busy
        msg = job.msg
        self.stage = 'converting the image'
        try:
            rgb = self.io.convert(msg, cfg.max_input_pixels)
        except Exception as e:  # noqa: BLE001 - ImageError, or a decoder failure we did not foresee
            self.stats.bad_inputs += 1
            self.log_error('bad_input', str(e) if isinstance(e, ImageError) else f'{type(e).__name__}: {e}')
            return False
        t_convert = time.perf_counter()
        if self._reset_requested:
            self._reset_requested = False
            self.engine.reset('reset')
        outputs = active_outputs(cfg, self.io.subscribed)
        output_hw = published_hw(cfg, self.engine, rgb.shape[:2])
        self.stage = 'engine step'
        try:
            result = self.engine.step(rgb, stamp_ns(msg.header.stamp), output_hw=output_hw,
                                      **step_options(outputs, cfg))
        except Exception as e:  # noqa: BLE001 - e.g. device out of memory, cv2.error: keep serving
            self.log_error('engine', f'{type(e).__name__}: {e}')
            return False
        t_step = time.perf_counter()
        self.stage = 'publishing'
        try:
            if self._renderer is None or self._renderer.table is not table:  # lookup tables once per table
                self._renderer = Renderer(table)
            self.io.publish(msg.header, render_outputs(outputs, self._renderer, result, rgb, cfg))
            if self.io.pub_info is not None:
                self.io.publish_camera_info(msg.header, result.class_ids.shape, cfg.max_input_pixels,
                                            job.after_gap)
        except Exception as e:  # noqa: BLE001 - rclpy raises RCLError on publish under load
            self.stats.published_errors += 1
            self.log_error('publish', str(e))
            return False
        t_pub = time.perf_counter()
        self.stats.frame_done(result, {
            'convert': (t_convert - t0) * 1e3, 'publish': (t_pub - t_step) * 1e3, 'wait': wait_ms,
            'in_node': (time.monotonic() - job.received_mono) * 1e3,
            'process': (t_pub - t0) * 1e3,   # the worker's time for this frame
        }, stamp_ns(msg.header.stamp), job.received_ns)
        return True

    def diagnostic_status(self, engine_cfg, worker: health.CameraHealth):
        """This camera's /diagnostics status."""
        return self.stats.diagnostic_status(self.engine, engine_cfg, worker, self.cfg.diagnostics_period_s,
                                            self.io.unmatched_publishers())
