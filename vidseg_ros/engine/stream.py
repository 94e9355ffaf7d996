"""StreamSegmenter: frame-by-frame video segmentation with temporal state.

Owns a model runner (PyTorch, TorchScript or ONNX), the temporal state (key-frame feature cache or
recurrent hidden state) and the key-frame policy; turns RGB uint8 frames into class-id masks.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from vidseg_ros.engine.backends import TorchRunner, check_model_file, open_exported
from vidseg_ros.config import fields_with
from vidseg_ros.engine.base import EngineConfig, FrameResult, NonFiniteOutput, checked
from vidseg_ros.engine import memory
from vidseg_ros.engine.frame_ops import InputBuffer, logits_to_outputs
from vidseg_ros.engine.model_paths import (DEFAULT_MODEL, MODEL_SUFFIXES, MODELS_ENV,  # noqa: F401 - re-exported
                                          UNTRAINED_PREFIX, file_problem, model_dirs, not_a_folder)
from vidseg_ros.engine.policy import Decision, KeyframePolicy, change_descriptor
from vidseg_ros.engine.stage_clock import StageClock
from vidseg_ros.engine.threads import thread_counts, use_threads
from vidseg_ros.engine.tiles import TileGrid, effective_tile
from vidseg_ros.engine.upsample import MAX_CLASSES, Upsampler, probabilities
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, default_meta, load_checkpoint

log = logging.getLogger(__name__)

STAGES = ('preprocess', 'model', 'postprocess')   # FrameResult.timings_ms keys
# The side of the blank frame a loaded model is checked on when no input size is known (rounded up to a
# multiple of its stride): a frame that small costs about a millisecond on a CPU
LOAD_CHECK_SIDE = 64
# Settings that need a new engine (a new model runner); the rest can change at run time.
REBUILD_FIELDS = fields_with(EngineConfig, 'rebuild')   # a change needs a new engine (from_checkpoint)


def resolve_model(spec: str) -> str:
    """``config.model`` -> a file path, or ``untrained:<arch>``; clear error listing where it looked, or saying
    what a path that is there is instead of a model file (``model_paths.file_problem``: a folder, a FIFO,
    /dev/zero, a link that loops were all 'not found')."""
    spec = spec.strip() or DEFAULT_MODEL
    if spec.startswith(UNTRAINED_PREFIX):
        return spec
    path = Path(spec).expanduser()
    if path.suffix in MODEL_SUFFIXES or os.sep in spec or path.is_file():
        check_model_file(path)
        return str(path)
    dirs, odd = model_dirs(), []
    for cand in (d / f'{spec}{s}' for d in dirs for s in MODEL_SUFFIXES):
        try:
            if not (problem := file_problem(cand)):
                return str(cand)
        except OSError as e:    # a models folder this process may not enter: looked further, and said
            problem = f'cannot be looked at ({e.strerror or e})'
        if problem != 'is missing':     # passed over for a model file further on, and said if none is
            odd.append(f'{cand} {problem}')
    hint = (' Train one (`vidseg train`) or use model "untrained:keyframe_fpn" for a demo with random '
            'weights.' if spec == DEFAULT_MODEL else '')
    looked = ', '.join(f'{d} ({why})' if (why := not_a_folder(d)) else str(d) for d in dirs)
    there = ''.join(f'; {o}' for o in odd[:3])
    raise CheckpointError(f'model {spec!r} not found{there}; looked for {spec}{"|".join(MODEL_SUFFIXES)} in '
                          f'{looked}; give a path, or add a folder to ${MODELS_ENV}.' + hint)


class StreamSegmenter:
    """Stateful segmenter for one video stream.

    Args:
        model: An ``nn.Module`` from ``create_model``, or a runner from ``engine.backends``.
        meta: Checkpoint meta (classes, palette, ignore_index, mean, std, input_hw, provenance, ...).
        config: Engine settings (device, precision, key-frame policy, tiles, ...).
        name: Display name of the model (file name), for diagnostics.
    """

    def __init__(self, model, meta: dict, config: EngineConfig | None = None, name: str = '', *,
                 _fork: bool = False):
        self.config = checked(config or EngineConfig())
        self._fork = _fork   # a fork shares the first engine's runner and leaves the warnings to it
        self._threads = thread_counts(self.config.num_threads)
        use_threads(self._threads)   # before the model is prepared (fused, compiled) on these threads
        self._torch_threads = torch.get_num_threads()   # what the last frame ran torch at (``threads``)
        if isinstance(model, torch.nn.Module):
            c = self.config
            model = TorchRunner(model, c.device, c.precision, c.channels_last, c.compile, cuda_graphs=c.cuda_graphs)
        self._runner = model
        self.meta = meta
        self._name = name
        self._input = InputBuffer(self._runner.device, meta.get('mean', [0.0] * 3), meta.get('std', [1.0] * 3))
        self._upsampler: Upsampler | None = None
        self._frame: torch.Tensor | None = None   # the last frame on the device (GPU only)
        # the whole frame path on the device (torch ops); on CPU OpenCV and engine.upsample are faster
        self._on_device = self._runner.device.type != 'cpu'
        self._last_net_hw: tuple[int, int] | None = None
        self._last_image_hw: tuple[int, int] | None = None
        self._clock = StageClock(self._runner.device)
        self.policy = KeyframePolicy(self.config)
        self._state: list | None = None  # per tile: key-frame cache or recurrent state (see decide)
        self._warn_tile_rounding()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, config: EngineConfig | None = None) -> 'StreamSegmenter':
        """Engine for ``config.model`` ('' = DEFAULT_MODEL, a name, a path, or 'untrained:<arch>'); where no
        input size is known, checked on one small blank frame (``check_output``)."""
        config = checked(config or EngineConfig())   # before a model is loaded
        use_threads(thread_counts(config.num_threads))
        spec = resolve_model(config.model)
        if spec.startswith(UNTRAINED_PREFIX):
            arch = spec[len(UNTRAINED_PREFIX):]
            model = create_model(arch)
            meta = default_meta(arch, model.arch_config,
                                provenance={'trained': False, 'data': 'none (random initialisation)'})
            log.warning('model %s has random weights: masks are meaningless until trained', arch)
            engine = cls(model, meta, config, name=spec)
        elif spec.endswith('.pt'):
            model, meta = load_checkpoint(spec)
            engine = cls(model, meta, config, name=Path(spec).name)
        else:
            runner = open_exported(spec, config.device, config.precision, config.channels_last, config.compile,
                                   cuda_graphs=config.cuda_graphs, num_threads=config.num_threads)
            engine = cls(runner, runner.meta, config, name=Path(spec).name)
        if not all(engine.net_hw):   # else the node's warm-up checks it at that size (the CLI: its first frame)
            engine.check_output()
        return engine

    def fork(self) -> 'StreamSegmenter':
        """Another stream on the same model and device, with its own state and policy."""
        return StreamSegmenter(self._runner, self.meta, self.config, self._name, _fork=True)

    def update_config(self, config: EngineConfig) -> None:
        """Apply run-time changes (policy, tiles, input size; a new geometry resets state on the next
        frame); model/device changes need a new engine."""
        config = checked(config)
        changed = [f for f in REBUILD_FIELDS if getattr(config, f) != getattr(self.config, f)]
        if changed:
            raise ValueError(f'changing {", ".join(changed)} needs a new engine (StreamSegmenter.from_checkpoint)')
        tile_changed = config.tile_size != self.config.tile_size
        self.config = config
        self._threads = thread_counts(config.num_threads)   # taken by the next step, in the thread running it
        self.policy.update_config(self.config)
        if tile_changed:
            self._warn_tile_rounding()

    def _warn_tile_rounding(self) -> None:
        """Say so once when ``tile_size`` is not a multiple of the model stride: tiles are rounded up to one
        (docs/models.md), and tile_size 1 silently became 108 stride-sized tiles of a 288x384 input."""
        size = self.config.tile_size
        tile = effective_tile(size, self.stride) if size > 0 else 0
        if tile != size and not self._fork:
            log.warning('tile_size %d is not a multiple of the model stride %d: tiles of %dx%d network pixels '
                        'are used', size, self.stride, tile, tile)

    def warmup(self, image_hw: tuple[int, int] | None = None, frames: int = 2) -> None:
        """Run a few blank frames (key and current) so the first real frame is not slowed by
        kernel selection / allocation, then reset; ``image_hw`` defaults to the network size."""
        h, w = image_hw or self.net_hw
        if not (h and w):
            raise ValueError('warmup needs image_hw when the network size follows the frame size')
        blank = np.zeros((int(h), int(w), 3), np.uint8)
        try:
            for _ in range(max(1, frames)):
                self.reset('start')
                self.step(blank)          # key frame
                self.step(blank)          # current frame (same as key for per-frame/recurrent models)
        except NonFiniteOutput:   # refused before it serves: the node keeps its old model, or does not start
            raise NonFiniteOutput(f'{self.model_name} gives NaN or inf on a blank {h}x{w} warm-up frame on '
                                  f'{self.device} ({self.config.precision}): an fp16 overflow, or weights that blow '
                                  'up; it would give no masks') from None
        self.reset('start')

    def check_output(self) -> None:
        """NonFiniteOutput when the model gives NaN or inf on a blank frame: finite weights that overflow (a bias
        of 1e38), or fp16. Without this, a model loaded with no input size (none in its file or the settings) was
        told about only on every frame. One key frame (a step from zero state) of LOAD_CHECK_SIDE (rounded up to
        a multiple of the stride) a side, run eagerly through the runner (``probe``): no state, policy or
        compiled graph of the engine is touched."""
        side = -(-LOAD_CHECK_SIDE // self.stride) * self.stride
        mean, std = (torch.tensor(self.meta.get(k, d), dtype=torch.float32).view(1, 3, 1, 1)
                     for k, d in (('mean', [0.0] * 3), ('std', [1.0] * 3)))
        x = ((-mean / std) * torch.ones(1, 3, side, side)).to(self._runner.device)    # a black frame, normalised
        try:
            _check_finite(self._runner.probe(x))
        except NonFiniteOutput:
            raise NonFiniteOutput(f'{self.model_name} gives NaN or inf on a blank {side}x{side} frame at load on '
                                  f'{self.device} ({self.config.precision}): an fp16 overflow, or weights that blow '
                                  'up; it would give no masks') from None

    def reset(self, reason: str = 'reset') -> None:
        """Clear temporal state; the next frame is a key frame reporting ``reason``."""
        self._state = None
        self.policy.reset(reason)

    # -- properties --------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.meta['classes'])

    @property
    def palette(self) -> np.ndarray:
        return np.asarray(self.meta['palette'], np.uint8).reshape(-1, 3)

    @property
    def ignore_index(self) -> int | None:
        return self.meta.get('ignore_index')

    @property
    def device(self) -> str:
        return str(self._runner.device)

    @property
    def backend(self) -> str:
        """'torch', 'torchscript' or 'onnx': what runs the model."""
        return self._runner.backend

    @property
    def threads(self) -> dict[str, int]:
        """The CPU thread count the model runs at, named by what runs it, as /diagnostics says it: {'onnx_threads':
        n} (its sessions' intra-op pool), {'torch_threads': n} (torch in the thread that ran the last frame; the
        name `vidseg bench` reports it by) for torch on the CPU, {} for torch on a GPU."""
        if self.backend == 'onnx':
            return {'onnx_threads': self._runner.threads}
        return {'torch_threads': self._torch_threads} if self._runner.device.type == 'cpu' else {}

    @property
    def kind(self) -> str:
        """'keyframe', 'recurrent' or 'frame'."""
        return self._runner.kind

    @property
    def model_name(self) -> str:
        return f'{self.meta.get("arch", "?")} ({self._name})' if self._name else str(self.meta.get('arch', '?'))

    @property
    def trained(self) -> bool:
        return bool(self.meta.get('provenance', {}).get('trained', False))

    @property
    def stride(self) -> int:
        return self._runner.stride

    def resized_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Size the frame is resized to: config.input_hw, else the checkpoint's, else the frame's."""
        hw = self.config.input_hw or self.meta.get('input_hw') or image_hw
        return int(hw[0]), int(hw[1])

    @property
    def net_hw(self) -> tuple[int, int]:
        """Network input size (resized size padded to a multiple of the stride); when it follows the
        frame size (no input_hw anywhere), the last frame's, or (0, 0) before the first frame."""
        if not (self.config.input_hw or self.meta.get('input_hw')):
            return self._last_net_hw or (0, 0)
        return self.net_hw_for((0, 0))

    def net_hw_for(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Network input size for a frame of ``image_hw``: its resized size padded to a multiple of the stride."""
        h, w = self.resized_hw(image_hw)
        s = self.stride
        return -(-h // s) * s, -(-w // s) * s

    # -- per frame ---------------------------------------------------------------------------
    @torch.inference_mode()   # the reused buffer is an inference tensor once step() has filled it
    def preprocess(self, image_rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 (H, W, 3) -> normalised, padded (1, 3, Hn, Wn) tensor and the unpadded size.

        The tensor is a buffer reused by the next call. On a GPU the uint8 frame is uploaded (4x less
        to copy than float32) and resized there; on CPU OpenCV resizes it first."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f'expected an RGB uint8 image (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}')
        rh, rw = self.resized_hw(image_rgb.shape[:2])
        net_hw = self.net_hw_for(image_rgb.shape[:2])
        if self._last_image_hw not in (None, image_rgb.shape[:2]):
            memory.give_back()   # the previous size's buffers are free now: worker arenas would keep them
        self._last_image_hw = image_rgb.shape[:2]
        if self._on_device:
            self._frame = self._input.upload(image_rgb)
            x = self._input.fill(self._frame, (rh, rw), net_hw)
        else:
            x = self._input.fill_cpu(image_rgb, (rh, rw), net_hw)
        self._last_net_hw = net_hw
        return x, (rh, rw)

    @torch.inference_mode()
    def step(self, image_rgb: np.ndarray, stamp_ns: int | None = None, *, want_confidence: bool = False,
             class_prob: int | None = None, output_hw: tuple[int, int] | None = None,
             confidence_u8: bool = False) -> FrameResult:
        """Segment one frame.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            stamp_ns: Frame time (ns) for gap/loop detection; None disables those checks.
            want_confidence: Also return the probability of the chosen class per pixel.
            class_prob: Also return the probability map of this class index.
            output_hw: Size of the returned arrays; default the input image size.
            confidence_u8: Return the confidence as uint8 0..255 (what a mono8 image needs), not float32.
        """
        out_hw = self._check_request(image_rgb, output_hw, class_prob)   # before any state changes
        use_threads(self._threads)   # in the thread that runs the model (see use_threads)
        self._runner.set_threads(self._threads.onnx)    # an ONNX model's sessions: rebuilt on a change
        self._torch_threads = torch.get_num_threads()
        self._clock.start()
        x, valid_hw = self.preprocess(image_rgb)
        grid = TileGrid.for_input(x.shape[-2:], self.config.tile_size, self.config.tile_stride, self.stride)
        decision = self.decide(x, valid_hw, grid, image_rgb.shape[:2], stamp_ns)
        self._clock.mark()
        try:
            logits = self._infer(x, grid, decision.is_key)
            _check_finite(logits)
        except Exception:
            self.reset('error')   # a half-updated state is never used: the next frame starts afresh
            raise
        self._clock.mark()
        result = self._postprocess(logits, x.shape[-2:], valid_hw, out_hw, want_confidence, class_prob,
                                   confidence_u8)
        self._clock.mark()
        result.is_key, result.key_reason, result.reset_reason = (decision.is_key, decision.key_reason,
                                                                 decision.reset_reason)
        result.timings_ms = self._clock.stages(STAGES)
        return result

    def decide(self, x: torch.Tensor, valid_hw, grid: TileGrid, image_hw, stamp_ns: int | None) -> Decision:
        """The policy's verdict for this frame (the only key-frame decision); clears the state on a reset."""
        decision = self.policy.decide(stamp_ns, tuple(image_hw), lambda: change_descriptor(x),
                                      network=(tuple(valid_hw), tuple(x.shape[-2:])), tiles=tuple(grid.tiles),
                                      cached=self.kind == 'keyframe')
        if decision.reset_reason:   # every path that empties the state also asks for a reset
            self._state = [None] * len(grid)   # per tile: key-frame cache or recurrent state
        return decision

    def _infer(self, x: torch.Tensor, grid: TileGrid, is_key: bool) -> torch.Tensor:
        """Run the model (whole image or tiles), updating the per-tile temporal state."""
        outs = []
        for i, (y0, x0, th, tw) in enumerate(grid.tiles):
            tile = x[..., y0:y0 + th, x0:x0 + tw]
            outs.append(self._run_one(tile, i, is_key))
        return grid.blend(outs, self._runner.output_stride) if len(grid) > 1 else outs[0]

    def _run_one(self, x: torch.Tensor, i: int, is_key: bool) -> torch.Tensor:
        r = self._runner
        if r.kind == 'keyframe':
            if is_key:
                logits, self._state[i] = r.key(x)
                return logits
            return r.current(x, self._state[i])
        state = self._state[i]
        if state is None:
            state = r.init_state(x)
        logits, self._state[i] = r.step(x, state)
        return logits

    def _postprocess(self, logits: torch.Tensor, net_hw, valid_hw, out_hw, want_confidence: bool,
                     class_prob: int | None, confidence_u8: bool) -> FrameResult:
        """Labels (and probabilities) at ``out_hw``, as if the logits were bilinear-resized there first:
        with torch on the device (the ids stay there for rendering), or with OpenCV on the CPU."""
        args = (net_hw, valid_hw, out_hw, want_confidence, class_prob, confidence_u8)
        if self._on_device or logits.shape[1] >= MAX_CLASSES:
            maps = logits_to_outputs(logits, *args)
            frame = (maps[0], self._frame) if self._on_device else None
            ids, conf, prob = (None if t is None else t.cpu().numpy() for t in maps)
        else:
            ids, conf, prob = self._postprocess_cpu(logits, *args)
            frame = None
        return FrameResult(class_ids=ids, confidence=conf, class_prob=prob, device_frame=frame)

    def _postprocess_cpu(self, logits: torch.Tensor, net_hw, valid_hw, out_hw, want_confidence: bool,
                         class_prob: int | None, confidence_u8: bool):
        """CPU: argmax at network resolution, exact interpolation only along label boundaries."""
        chw = logits[0].float().contiguous().numpy()
        scores = np.ascontiguousarray(chw.transpose(1, 2, 0))
        key = (scores.shape[:2], tuple(valid_hw), tuple(out_hw), tuple(net_hw))
        if self._upsampler is None or self._upsampler.key != key:
            self._upsampler = Upsampler(*key)
        ids = self._upsampler.labels(scores)
        conf = prob = None
        if want_confidence or class_prob is not None:
            conf, prob = probabilities(self._upsampler, chw, want_confidence, class_prob, confidence_u8)
        return ids, conf, prob

    def _check_request(self, image_rgb: np.ndarray, output_hw, class_prob: int | None) -> tuple[int, int]:
        """The output size ``step`` was asked for, checked with the class index, before any state changes."""
        n = self._runner.info.num_classes
        if class_prob is not None and not 0 <= class_prob < n:
            raise ValueError(f'class_prob {class_prob} out of range 0..{n - 1}')
        if min(image_rgb.shape[:2], default=0) < 1:
            raise ValueError(f'empty image {image_rgb.shape}: nothing to segment')
        if not output_hw:   # the image's own size
            return tuple(image_rgb.shape[:2])
        out_hw = tuple(int(v) for v in output_hw)
        if len(out_hw) != 2 or min(out_hw) < 1:
            raise ValueError(f'output_hw must be two sizes >= 1, got {out_hw}')
        return out_hw


def _check_finite(logits: torch.Tensor) -> None:
    """NonFiniteOutput when the logits hold NaN or inf (an fp16 overflow, weights that blow up on this input):
    argmax would give a confident-looking constant mask, and a recurrent state would carry the NaN to every
    later frame. One reduction (0.05 ms on CPU at 72x96x11): NaN or inf anywhere makes the sum so."""
    if not torch.isfinite(logits.sum(dtype=torch.float64)):   # float64: finite logits cannot overflow it
        raise NonFiniteOutput('the model output holds NaN or inf on this frame (an fp16 overflow, or weights '
                              'that blow up on this input): no mask for it; the temporal state is cleared')
