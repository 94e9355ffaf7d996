"""Snapshot mode's in-memory window: the newest messages, bounded in bytes and/or seconds of log time."""
from __future__ import annotations

import collections


class SnapshotRing:
    """Messages ``(topic, data, log_time_ns, publish_time_ns)``, oldest first; not thread-safe (the
    recorder holds its lock).

    Args:
        max_bytes: keep at most this many payload bytes (0: no bound).
        max_duration_s: keep messages at most this much older than the newest (0: no bound).
    """

    def __init__(self, max_bytes: int = 0, max_duration_s: float = 0.0):
        if not (max_bytes or max_duration_s):
            raise ValueError('snapshot_mode needs snapshot_max_bytes or snapshot_max_duration_s (the window)')
        self.max_bytes = max_bytes
        self.max_ns = int(max_duration_s * 1e9)
        self.messages: collections.deque = collections.deque()
        self.bytes = 0
        self._newest_ns: int | None = None   # the newest log time in the ring

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int) -> list[str]:
        """Append one message; returns the topics of the messages that fell out of the window.

        A log time more than the window behind the newest (the node clock went back: ``/clock`` of a replay
        restarted) starts the window afresh: those older messages belong to a timeline the window no longer
        covers, and, newer than anything to come for as long as the jump, they never expired (a 2 s window
        held 17 messages and reported -988 s; with no byte bound the ring grew without end)."""
        ring = self.messages
        jumped_back = self.max_ns and self._newest_ns is not None and log_time_ns < self._newest_ns - self.max_ns
        self._newest_ns = log_time_ns if jumped_back or self._newest_ns is None else max(self._newest_ns,
                                                                                            log_time_ns)
        ring.append((topic, data, log_time_ns, publish_time_ns))
        self.bytes += len(data)
        expired = []
        while len(ring) > 1 and (jumped_back or (self.max_bytes and self.bytes > self.max_bytes)
                                 or (self.max_ns and log_time_ns - ring[0][2] > self.max_ns)):
            old_topic, old_data = ring.popleft()[:2]
            self.bytes -= len(old_data)
            expired.append(old_topic)
        return expired

    def take(self) -> tuple[collections.deque, int]:
        """The whole window and its size in bytes; the ring starts empty again."""
        window, size = self.messages, self.bytes
        self.messages, self.bytes, self._newest_ns = collections.deque(), 0, None
        return window, size
