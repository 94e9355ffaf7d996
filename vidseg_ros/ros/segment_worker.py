"""segment_node's inference worker: one thread serving the cameras round-robin, and its end.

``InferenceWorker`` is a part of :class:`vidseg_ros.ros.segment_node.SegmentNodeCore` (it works on the core's
``_lock``, ``streams``, ``cfg``, ``table``, ``_busy``, ``fatal`` and ``_worker_died``). The worker takes the
newest frame of the next camera that has one, brings the engine to the parameters between frames
(``_apply_wanted``) and runs the frame; should it end while serving, the executor thread reports it
(``_on_worker_died``: ERROR on /diagnostics) and the process exits non-zero, so ``respawn`` restarts it.
"""
from __future__ import annotations

import threading
import time

from rclpy.duration import Duration

from vidseg_ros.ros.spin import WorkerDied


class InferenceWorker:
    """The worker loop (``_work``) over the cameras' one-slot mailboxes, and what happens when it ends."""

    def _next_job(self, stopping: threading.Event):
        with self._lock:
            while not stopping.is_set():
                n = len(self.streams)
                for k in range(n):
                    stream = self.streams[(self._rr + k) % n]
                    job = stream.take()
                    if job is not None:
                        self._rr = (self._rr + k + 1) % n  # fair: the next search starts after this camera
                        return stream, job
                self._lock.wait(timeout=0.5)
        return None

    def _work(self, stopping: threading.Event) -> None:
        try:
            while True:
                item = self._next_job(stopping)
                if item is None:
                    return
                stream, job = item
                try:
                    self._apply_wanted(stopping)
                    if stopping.is_set():   # stopped while a new model loaded: the frame goes with the topics
                        return
                    with self._lock:
                        cfg, table = self.cfg, self.table
                    self._busy = (time.monotonic(), stream)
                    stream.process(job, cfg, table)   # never raises on a frame
                except Exception as e:  # noqa: BLE001 - a bug around one frame must not end serving
                    stream.log_error('internal', f'{type(e).__name__}: {e}')
                finally:
                    self._busy = None
        except BaseException as e:
            self.fatal = f'{type(e).__name__}: {e}'
            raise
        finally:
            if not stopping.is_set():   # ended while serving: report it from the executor thread, then exit
                self.fatal = self.fatal or 'the worker thread returned'
                self._worker_died.trigger()

    def _on_worker_died(self) -> None:
        """Executor thread: tell /diagnostics (ERROR) and the log, then end the process non-zero."""
        if not self.fatal:
            return
        self.node.get_logger().fatal(f'inference worker stopped: {self.fatal}; exiting so the node is restarted')
        self._publish_diagnostics()
        self.pub_diag.wait_for_all_acked(Duration(seconds=1.0))
        raise WorkerDied(self.fatal)
