"""Engine contract shared by the segment node, the tools and the benchmarks."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidseg_ros.config import from_dict, setting, to_dict
from vidseg_ros.constants import INPUT_SIDE_RANGE


@dataclass
class EngineConfig:
    """Inference settings; each name is also the segment node's ROS parameter."""

    model: str = setting('', 'Checkpoint (.pt), TorchScript (.ts) or ONNX (.onnx) file, or the name of '
                             'a model shipped in share/vidseg_ros/models; empty = the default model', change='rebuild')
    device: str = setting('auto', 'Where to run: auto (cuda when present, else cpu), cpu, cuda, cuda:N', change='rebuild')
    precision: str = setting('fp32', 'Arithmetic precision on the device', ('fp32', 'fp16', 'bf16'), change='rebuild')
    channels_last: bool = setting(False, 'Use channels_last memory format (faster convs on GPU)', change='rebuild')
    compile: bool = setting(False, 'Wrap the model with torch.compile (slow first frames)', change='rebuild')
    input_hw: list[int] = setting([], 'Network input size [H, W]; empty = the checkpoint\'s size. '
                                      'Other sizes are padded to a multiple of the model stride',
                               range=INPUT_SIDE_RANGE, lengths=(0, 2))
    keyframe_policy: str = setting('fixed', 'Key frames at a fixed interval, or adaptive on '
                                            'low-level feature change', ('fixed', 'adaptive'))
    keyframe_interval: int = setting(5, 'Frames between key frames (fixed policy); 1 = every frame',
                                     range=(1, 10000))
    keyframe_max_interval: int = setting(30, 'Adaptive policy: force a key frame after this many frames',
                                         range=(1, 10000))
    keyframe_threshold: float = setting(0.2, 'Adaptive policy: relative low-level feature change '
                                             'that triggers a key frame', range=(0.0, 100.0))
    max_gap_s: float = setting(0.5, 'A stamp gap larger than this (or a stamp going backwards) resets '
                                    'temporal state and forces a key frame; 0 = no gap resets (e.g. replayed '
                                    'data with irregular stamps; a stamp going backwards still resets). Raise it '
                                    'for a camera slower than 1/max_gap_s, or each of its frames resets',
                               range=(0.0, 3600.0))
    tile_size: int = setting(0, 'Overlapping-tile inference: tile side in network pixels; 0 = off',
                             range=(0, 8192))
    tile_stride: int = setting(0, 'Tile stride in network pixels; 0 = tile_size * 3 / 4', range=(0, 8192))
    cuda_graphs: bool = setting(False, 'Replay the model steps from CUDA graphs (captured per input size '
                                       'after warm-up; CUDA only, ignored elsewhere)', change='rebuild')
    num_threads: int = setting(0, 'CPU threads a frame runs on: torch\'s intra-op threads, OpenCV\'s pool '
                                  '(resize, upsampling, rendering) and an ONNX model\'s onnxruntime pool; 0 = '
                                  'each one\'s default (one per core, or OMP_NUM_THREADS). Fewer threads than cores '
                                  'leaves room for the camera driver and the node\'s own threads. Process-wide for '
                                  'torch and OpenCV (torch.set_num_threads, cv2.setNumThreads): other work in the '
                                  'same process (a composed container) runs at it too; a change rebuilds an ONNX '
                                  'model\'s sessions at the next frame, its temporal state kept', range=(0, 256))


def checked(config: EngineConfig) -> EngineConfig:
    """A copy of ``config`` checked against its declared settings (types, choices, ranges, lengths) by the
    rule YAML files and ROS parameters go through (``config.from_dict``): a ConfigError (a ValueError)
    naming the setting and the rule, instead of a KeyError or an OpenCV assertion frames later."""
    return from_dict(EngineConfig, to_dict(config))


class NonFiniteOutput(ValueError):
    """The model's output for one frame holds NaN or inf: that frame has no mask. A ValueError: the model (its
    weights, its precision) is at fault, so a command reports it as a user error (one line, exit 2)."""


@dataclass
class FrameResult:
    """What the engine returns for one frame; arrays are at the requested output size."""

    class_ids: np.ndarray                       # (H, W) uint8 class index per pixel
    confidence: np.ndarray | None = None        # (H, W) probability of the chosen class: float32,
    #                                             or uint8 0..255 when asked with confidence_u8
    class_prob: np.ndarray | None = None        # (H, W) float32 probability of one selected class
    is_key: bool = True                         # key frame (full model) or current frame (cached)
    key_reason: str = ''                        # why a key frame (policy.KEY_REASONS), '' otherwise
    reset_reason: str = ''                      # why temporal state was reset before this frame
    timings_ms: dict[str, float] = field(default_factory=dict)  # preprocess / model / postprocess
    # On a GPU: (class ids (H, W) uint8, frame (H, W, 3) uint8) still on the device, so colour mask and
    # overlay can be rendered there (outputs.FrameImages); valid until the engine's next step. None on CPU.
    device_frame: tuple | None = None
