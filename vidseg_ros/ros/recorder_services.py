"""recorder_node's services: ``~/pause``, ``~/resume``, ``~/split`` and ``~/snapshot`` (std_srvs/Trigger).

``RecorderServices`` is a part of :class:`vidseg_ros.ros.recorder_node.RecorderNode`: the handlers settle the
pending topics first (``settle_all``: their held messages are written, skipped or buffered as the state they
came in says), then act on the node's ``recorder``.
"""
from __future__ import annotations


class RecorderServices:
    """The Trigger services' handlers (created in ``RecorderNode.__init__``)."""

    def _on_pause(self, request, response):
        self.settle_all()
        self.recorder.pause()
        response.success, response.message = True, 'paused'
        return response

    def _on_resume(self, request, response):
        self.settle_all()
        self.recorder.resume()
        response.success, response.message = self.recorder.error is None, self.recorder.error or 'recording'
        return response

    def _on_split(self, request, response):
        self.recorder.split()
        response.success, response.message = True, f'closing {self.recorder.current_file or "(no file yet)"}'
        return response

    def _on_snapshot(self, request, response):
        self.settle_all()
        path, response.message = self.recorder.trigger_snapshot()
        response.success = path is not None
        return response
