"""The core's Python logging into the node's ROS logger.

The engine, the recorder's writer and the video reader log with ``logging.getLogger('vidseg_ros....')``: they
import and run without rclpy. In a node nothing passed those records on, so Python's last-resort handler printed
warnings as bare stderr lines ("model keyframe_fpn has random weights ...": no level, no node name, not on
/rosout for rqt_console) and dropped INFO ("recording to <file>", "closed <file>", "snapshot written: ...").
``ForwardToRos`` hands each record of the ``vidseg_ros`` loggers, INFO and up, to the node's logger while
``spin.run`` holds the node; each node ``adopt``s it as soon as its name is known, before its model loads.
"""
from __future__ import annotations

import logging

import rclpy.logging

PACKAGE_LOGGER = 'vidseg_ros'
_active: 'ForwardToRos | None' = None   # the process's handler (spin.run makes one per node)


def adopt(node) -> None:
    """Core lines from here on come as ``node``'s (called right after Node.__init__: the model loads later in the
    constructor, and its warnings named the node class, not the node)."""
    if _active is not None:
        _active.use(node.get_logger())


class ForwardToRos(logging.Handler):
    """Records of the ``vidseg_ros`` loggers -> ``target`` (an rclpy logger: first one named after the node class,
    the node's own once it exists, ``use``). ``close()`` puts the package logger back as it was."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.target = rclpy.logging.get_logger(name)
        self._logger = logging.getLogger(PACKAGE_LOGGER)
        self._saved = (self._logger.level, self._logger.propagate)
        self._logger.setLevel(logging.INFO)     # the root's WARNING would drop INFO before any handler
        self._logger.propagate = False          # else the last-resort handler prints warnings a second time
        self._logger.addHandler(self)
        global _active
        _active = self

    def use(self, ros_logger) -> None:
        self.target = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            level = record.levelno
            if level >= logging.CRITICAL:
                self.target.fatal(text)
            elif level >= logging.ERROR:
                self.target.error(text)
            elif level >= logging.WARNING:
                self.target.warning(text)
            else:
                self.target.info(text)
        except Exception:  # noqa: BLE001 - a log line never stops a node (logging's own report on stderr)
            self.handleError(record)

    def close(self) -> None:
        global _active
        if _active is self:
            _active = None
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]
        super().close()
