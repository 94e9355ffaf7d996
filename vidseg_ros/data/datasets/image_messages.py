"""An image message of a bag as extract reads it: its stamp and frame size from the serialized bytes (no decoding:
the main process plans with them), its encoding for the index, and its frame decoded to RGB (in a worker)."""
from __future__ import annotations

import struct

import numpy as np
from rosbags.serde import SerdeError

from vidseg_ros.data.bags.reader import RawMessage, deserialize
from vidseg_ros.data.image_headers import compressed_size
from vidseg_ros.data.images import ImageError, compressed_payload, decode_compressed, image_fields_to_rgb8
from vidseg_ros.text import clip


def header_stamp_ns(msg: RawMessage) -> int:
    """``header.stamp`` read straight from the serialized bytes (first field of Image types)."""
    if len(msg.data) < 12:
        return 0
    if msg.fmt == 'cdr':        # 4-byte encapsulation header; byte 1 says little (1) or big (0) endian
        sec, nsec = struct.unpack_from('<iI' if msg.data[1] == 1 else '>iI', msg.data, 4)
    else:                       # ROS 1 Header: uint32 seq, then the stamp
        sec, nsec = struct.unpack_from('<II', msg.data, 4)
    return sec * 1_000_000_000 + nsec


# What deserialising a damaged message raises (``frame_hw``, ``deserialized``).
DAMAGED = (SerdeError, ValueError, IndexError)


def deserialized(msg: RawMessage):
    """The message deserialised, or None where its bytes are damaged."""
    try:
        return deserialize(msg)
    except DAMAGED:
        return None


def frame_hw(msg: RawMessage, m=None) -> tuple[int, int] | None:
    """(height, width) of an image message without decoding the image: rosbags deserializes the fields as
    views of the bytes (10 us for a 640x480 frame), a ``CompressedImage``'s size comes from its PNG / JPEG / WebP
    / BMP header; None when they do not say (another compressed format, damaged bytes). ``m``: the message
    already deserialised (None: deserialised here)."""
    try:
        if m is None:
            m = deserialize(msg)
        if msg.msgtype.endswith('CompressedImage'):
            # a compressedDepth's 12-byte depth header before its PNG left out
            return tuple(compressed_size(compressed_payload(m.format, memoryview(m.data)))[1:])
        return int(m.height), int(m.width)
    except (ImageError, *DAMAGED):
        return None


# A CompressedImage format as the index's encoding column keeps it ("bgr8; jpeg compressed bgr8" is 26).
FORMAT_CELL = 64


def format_cell(text: str) -> str:
    """A CompressedImage's ``format``, free text of the recording's publisher, as the index stores it: its
    control characters escaped and cut to ``FORMAT_CELL`` characters. Raw, a format of ESC sequences, line breaks
    and 100 kB went into every row of index.csv (100 kB a frame), and to the terminal of whoever read it."""
    return clip(text, FORMAT_CELL) if text else 'compressed'


def decode_message(msg: RawMessage) -> tuple[np.ndarray, str, bytes | None]:
    """-> (RGB frame, source encoding (a format: ``format_cell``), compressed payload or None)."""
    m = deserialize(msg)
    if msg.msgtype.endswith('CompressedImage'):
        data = bytes(m.data)
        return decode_compressed(m.format, data), format_cell(m.format), data
    return image_fields_to_rgb8(m.encoding, m.height, m.width, m.step, m.data, m.is_bigendian), m.encoding, None


def message_encoding(msg: RawMessage) -> str:
    """The encoding column of a frame, read from its message without decoding the image."""
    m = deserialize(msg)
    return format_cell(m.format) if msg.msgtype.endswith('CompressedImage') else clip(m.encoding, FORMAT_CELL)
