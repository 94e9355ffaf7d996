"""A topic's frames back in stamp order where a few arrived late (standard library only).

A bag stores messages in receive order. Where several publishers share a topic, or a driver stamps a frame at
exposure and it arrives after the next one, two frames come swapped; ``extract`` splits a sequence wherever the
stamps go backwards, so one swapped pair cut a drive in pieces (and ``propagate`` skips the pieces without a
human label). ``StampOrder`` holds the last ``REORDER_FRAMES`` frames of a topic and releases them in stamp
order: a frame that arrives late, by less than the gap that splits sequences and before the frames it belongs
between were released, takes its place. A larger step back (a bag looped, sim time reset, another recording)
releases everything held first, so the frame after it still starts a new sequence, as without the buffer.
"""
from __future__ import annotations

import bisect

# Frames held per topic: a frame can arrive after at most this many later-stamped frames and still be put back in
# its place. A frame is a message of up to a few MB (a 1080p raw frame is 6 MB): 8 hold some 50 MB per topic.
REORDER_FRAMES = 8


class StampOrder:
    """One topic's frames released in stamp order, holding at most ``depth`` of them.

    Args:
        depth: frames held (``REORDER_FRAMES``); 0 releases every frame as it comes.
        max_step_s: the largest step back (from the latest stamp seen) that is put back in order; a larger one
            releases every frame held before it (``extract``'s ``max_gap_s``: a larger step splits anyway).
    """

    def __init__(self, depth: int = REORDER_FRAMES, max_step_s: float = 0.5):
        self.depth, self.max_step_s = depth, max_step_s
        self.held: list[tuple[int, int, object]] = []   # (stamp, arrival number, item), in stamp order
        self.released: int | None = None                # the stamp of the last frame released
        self.arrivals = 0

    def push(self, stamp_ns: int, item) -> list[tuple[int, object]]:
        """Take a frame; -> the (stamp, item) released by it, in the order to process them."""
        out = []
        newest = self.held[-1][0] if self.held else self.released
        if newest is not None and stamp_ns < newest and not self._in_reach(stamp_ns, newest):
            out = self.drain()
        # equal stamps stay in arrival order (adjacent: extract counts the second as a duplicate)
        bisect.insort(self.held, (stamp_ns, self.arrivals, item))
        self.arrivals += 1
        while len(self.held) > self.depth:
            out.append(self._release())
        return out

    def drain(self) -> list[tuple[int, object]]:
        """Every frame held, in stamp order (at the end of the bag, or before a jump back)."""
        return [self._release() for _ in range(len(self.held))]

    def _in_reach(self, stamp_ns: int, newest: int) -> bool:
        """Whether a frame stamped before the latest is late (its place is among those held), not a jump back."""
        return (newest - stamp_ns) / 1e9 <= self.max_step_s and (self.released is None or stamp_ns >= self.released)

    def _release(self) -> tuple[int, object]:
        stamp, _, item = self.held.pop(0)
        self.released = stamp
        return stamp, item
