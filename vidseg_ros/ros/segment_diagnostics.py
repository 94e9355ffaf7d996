"""segment_node's ~/reset service and /diagnostics: one status per camera, STALE when it stops serving.

``SegmentReports`` is a part of :class:`vidseg_ros.ros.segment_node.SegmentNodeCore` (it works on the core's
``streams``, ``worker``, ``_busy``, ``fatal``, ``engine_cfg`` and ``pub_diag``).
"""
from __future__ import annotations

import time

from vidseg_ros.ros import diagnostics, health

LAST_STATUS_ACK_S = 0.5   # the last (STALE) /diagnostics status waits this long for reliable readers to take it


class SegmentReports:
    """``~/reset`` (std_srvs/Trigger) and the node's /diagnostics statuses."""

    def _on_reset(self, request, response):
        for s in self.streams:
            s.request_reset()
        response.success = bool(self.streams)
        response.message = (f'temporal state of {len(self.streams)} camera(s) resets on the next frame (key_reason '
                            f'reset)' if self.streams else 'not serving (inactive): nothing to reset')
        return response

    def _publish_last_status(self, message: str) -> None:
        """Each served camera's last /diagnostics status: STALE with ``message``. Not after the worker died:
        its ERROR (why the node exits) stays the last word."""
        if not self.streams or self.fatal:
            return
        diagnostics.last_word(self.pub_diag, lambda: diagnostics.array(
            self.node.get_clock().now().to_msg(), [s.stats.stale_status(message) for s in self.streams]),
            LAST_STATUS_ACK_S, self.node.get_logger())

    def _publish_diagnostics(self) -> None:
        alive = self.worker is not None and self.worker.is_alive()
        if not alive and not self._stopping.is_set() and not self.fatal:
            self.fatal = 'the worker thread is gone'   # backstop: the guard condition should have said so
            self._worker_died.trigger()
        busy = self._busy
        statuses = []
        for s in self.streams:
            worker = health.CameraHealth(worker_alive=alive and not self.fatal, worker_error=self.fatal,
                                         busy_s=time.monotonic() - busy[0] if busy else 0.0,
                                         busy_camera=busy[1].name if busy else '', cameras=len(self.streams))
            statuses.append(s.diagnostic_status(self.engine_cfg, worker))
        self.pub_diag.publish(diagnostics.array(self.node.get_clock().now().to_msg(), statuses))
