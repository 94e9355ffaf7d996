"""sensor_msgs <-> numpy for rclpy messages, through the ROS-free encodings in data/images.py."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vidseg_ros.data.images import (array_to_image_fields, decode_compressed, encode_compressed,
                                    image_fields_to_rgb8, pinhole_intrinsics)
from vidseg_ros.ros.guards import camera_info_image_size


def image_msg_to_rgb8(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """Image -> (H, W, 3) uint8 RGB; raises ImageError for malformed, unsupported or oversized messages."""
    return image_fields_to_rgb8(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian,
                                max_pixels)


def compressed_msg_to_rgb8(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """CompressedImage (jpeg/png; webp, bmp) -> (H, W, 3) uint8 RGB; raises ImageError when undecodable or oversized
    (the size is read from the header, before decoding)."""
    return decode_compressed(msg.format, msg.data, max_pixels)


def array_to_image_msg(arr: np.ndarray, encoding: str, header) -> Image:
    """Array -> Image carrying the given header (the input's: outputs never restamp)."""
    fields = array_to_image_fields(arr, encoding)
    msg = Image(header=header, height=fields['height'], width=fields['width'], encoding=encoding,
                is_bigendian=0, step=fields['step'])
    msg.data = fields['data']
    return msg


def rgb8_to_compressed_msg(rgb: np.ndarray, header, fmt: str = 'jpeg', quality: int = 90) -> CompressedImage:
    fmt_string, data = encode_compressed(rgb, fmt, quality)
    msg = CompressedImage(header=header, format=fmt_string)
    msg.data = data
    return msg


def scale_camera_info(info: CameraInfo, out_w: int, out_h: int, header=None) -> CameraInfo:
    """The CameraInfo of the image ``info`` describes, resized to ``out_w`` x ``out_h``: K and P with the
    ROI offset removed and the binning applied (REP-104), then scaled; binning 0 and no ROI, as the
    output is a full image; D and R unchanged."""
    image_w, image_h = camera_info_image_size(info)
    if image_w <= 0 or image_h <= 0:
        raise ValueError(f'camera_info has zero size ({info.width}x{info.height})')
    bx, by = max(info.binning_x, 1), max(info.binning_y, 1)
    sx, sy = out_w / image_w, out_h / image_h
    # pixel (u, v) of the full sensor -> ((u - x_offset) / bx * sx, (v - y_offset) / by * sy)
    to_output = np.array([[sx / bx, 0.0, -info.roi.x_offset * sx / bx],
                          [0.0, sy / by, -info.roi.y_offset * sy / by],
                          [0.0, 0.0, 1.0]])
    out = CameraInfo()
    out.header = header if header is not None else info.header
    out.width, out.height = out_w, out_h
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.k = (to_output @ np.asarray(info.k, dtype=float).reshape(3, 3)).reshape(-1).tolist()
    out.r = list(info.r)
    out.p = (to_output @ np.asarray(info.p, dtype=float).reshape(3, 4)).reshape(-1).tolist()
    return out


def pinhole_camera_info(width: int, height: int, header, hfov_deg: float = 60.0) -> CameraInfo:
    """A plausible pinhole CameraInfo for sources without calibration (video files, image folders)."""
    info = CameraInfo(header=header, width=width, height=height, distortion_model='plumb_bob')
    info.d = [0.0] * 5
    info.k, info.p = pinhole_intrinsics(width, height, hfov_deg)
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    return info
