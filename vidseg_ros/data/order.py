"""The order of numbered files: image folders, label folders, a bag's split files (standard library only, so
the recorder's writer can use it without OpenCV)."""
from __future__ import annotations

import re
from pathlib import Path


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders numbered names by number: ``frame_2`` before ``frame_10``, as a camera or a
    user numbered them (plain string order put 10 and 11 between 1 and 2); zero-padded names keep their order."""
    parts = re.split(r'(\d+)', str(path))      # text, number, text, ...: alike positions compare alike types
    # the whole name apart, as the tie-break (frame_01 / frame_1): appended to the parts it would meet an int
    # where one name has more parts (a1b against a1b2)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), str(path)
