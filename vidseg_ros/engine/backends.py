"""Model runners behind the stream engine: PyTorch modules and TorchScript exports here, ONNX exports in
``onnx_runner``; the device rule in ``devices``.

All runners speak the same flat-tensor protocol, by the model's ``StreamInfo.kind``
(``models.contract``; exported files carry the ``StreamInfo`` in their metadata):

* ``keyframe``:  ``key(x) -> (logits, cache)`` and ``current(x, cache) -> logits``
* ``recurrent``: ``step(x, state) -> (logits, state)``
* ``frame``:     ``step(x, ()) -> (logits, ())`` (per-frame models: no state at all)

``logits`` come at 1/``output_stride`` of the network input; the engine resizes them.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from vidseg_ros.engine.devices import check_device_for, resolve_device
from vidseg_ros.engine.exported_checks import META_KEY, check_format, check_methods, exported_meta_info, ort_reason
from vidseg_ros.engine.graphs import CudaGraphed
from vidseg_ros.engine.model_paths import file_problem
from vidseg_ros.engine.onnx_runner import OnnxRunner
from vidseg_ros.engine.runner import Runner, zero_state
from vidseg_ros.models.blocks import fuse_conv_bn
from vidseg_ros.models.contract import stream_info
from vidseg_ros.models.model_file_checks import (CheckpointError, check_archive, check_crc, check_finite,
                                                check_readable)
from vidseg_ros.files import text_path
from vidseg_ros.text import one_line

log = logging.getLogger(__name__)


class TorchRunner(Runner):
    """Runs an ``nn.Module`` under inference mode, autocast, channels_last and optional compile.

    Args:
        model: A model following ``models.contract`` (e.g. from ``create_model``).
        device: 'auto', 'cpu', 'cuda', 'cuda:N'.
        precision: 'fp32', 'fp16' or 'bf16' (autocast).
        channels_last: Use the channels_last memory format.
        compile: Wrap the entry points with ``torch.compile``.
        fuse: Run a copy of the model with BatchNorm folded into the convs (the caller's model,
            possibly still training, is left untouched).
        cuda_graphs: Replay the entry points from CUDA graphs (CUDA only; see ``graphs.CudaGraphed``).
    """

    backend = 'torch'

    def __init__(self, model: nn.Module, device: str = 'auto', precision: str = 'fp32',
                 channels_last: bool = False, compile: bool = False, fuse: bool = True,
                 cuda_graphs: bool = False):
        self.device = resolve_device(device)
        self.info = stream_info(model)
        self.precision = precision
        self.channels_last = channels_last
        if fuse:
            model = fuse_conv_bn(copy.deepcopy(model).eval())
        model = model.eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._dtype = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]
        if self.kind == 'keyframe':
            self._key, self._current = model.forward_key, model.forward_current
        self._step = model.forward_step
        if compile:
            # WARNING, not INFO: the nodes configure no logging, and a silent warm-up (about 90 s on a CPU)
            # looked like a hung node
            log.warning('compiling the model (torch.compile): the first frames take longer')
            self._step = torch.compile(self._step)
            if self.kind == 'keyframe':
                self._key, self._current = torch.compile(self._key), torch.compile(self._current)
        self._graphed = self._use_graphs(cuda_graphs)

    def _use_graphs(self, cuda_graphs: bool) -> bool:
        """Wrap the entry points in CUDA graphs when asked and possible; False elsewhere."""
        if not cuda_graphs:
            return False
        if self.device.type != 'cuda':
            log.info('cuda_graphs ignored on %s', self.device)
            return False
        for name in ('_key', '_current', '_step'):
            if hasattr(self, name):
                setattr(self, name, CudaGraphed(getattr(self, name)))
        return True

    def _ctx(self):
        if self._dtype is None:
            return contextlib.nullcontext()
        # the autocast weight cache must be off while a CUDA graph is captured
        return torch.autocast(self.device.type, dtype=self._dtype, cache_enabled=not self._graphed)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def key(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        with self._ctx():
            out = self._key(self._prep(x))
        return out[0].float(), tuple(out[1:])

    @torch.inference_mode()
    def current(self, x: torch.Tensor, cache: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with self._ctx():
            return self._current(self._prep(x), *cache).float()

    @torch.inference_mode()
    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        with self._ctx():
            out = self._step(self._prep(x), *state)
        return out[0].float(), tuple(out[1:])

    @torch.inference_mode()
    def probe(self, x: torch.Tensor) -> torch.Tensor:
        """``_Runner.probe`` run eagerly, never compiled nor replayed from a CUDA graph: a check at a size no frame
        may have must not compile (90 s on a CPU) or capture a graph (and take one of its slots) for it."""
        with self._ctx():
            x = self._prep(x)
            out = (self.model.forward_key(x) if self.kind == 'keyframe' else
                   self.model.forward_step(x, *self.init_state(x)))
        return out[0].float()

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.kind != 'recurrent':
            return ()
        dtype = self._dtype if self._dtype is not None else torch.float32
        return self.model.init_state(x.shape[0], x.shape[-2], x.shape[-1], self.device, dtype)


class TorchScriptRunner(TorchRunner):
    """A ``.ts`` file from ``export_torchscript``: same methods as the module, meta in extra files."""

    backend = 'torchscript'

    def __init__(self, path: str | Path, device: str = 'auto', precision: str = 'fp32',
                 channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False):
        extra = {META_KEY + '.json': ''}
        dev = resolve_device(device)
        check_archive(path)     # torch.jit.load inflates deflated records too: a small file, gigabytes of memory
        check_crc(path)         # nor does torch.jit.load check the records' CRC-32: flipped weight bytes loaded
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # torch.jit is deprecated, still works
            with text_path(path) as text:
                module = torch.jit.load(text, map_location=dev, _extra_files=extra)
        self.meta, self.info = exported_meta_info(extra[META_KEY + '.json'] or '{}', path)
        check_finite(module.state_dict(), str(path))    # exported before export refused such weights
        self.device, self.precision, self.channels_last = dev, precision, channels_last
        self._dtype = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]
        check_methods(module, self.info, path)
        self.model = module.eval()
        if self.kind == 'keyframe':
            self._key, self._current = module.forward_key, module.forward_current
        else:
            self._step = module.forward_step
        if compile:
            log.warning('compile=True is ignored for TorchScript models')
        self._graphed = self._use_graphs(cuda_graphs)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return zero_state(self.info.state_layout, x, self.device, torch.float32)


def check_model_file(path: Path) -> None:
    """CheckpointError unless ``path`` is a regular file (or a link to one), saying what it is otherwise
    (``model_paths.file_problem``): the one message of ``resolve_model``, ``open_exported`` and ``vidseg info``."""
    if problem := file_problem(path):
        raise CheckpointError(f'model file not found: {path}' if problem == 'is missing' else
                              f'model file {path} {problem}')


def open_exported(path: str | Path, device: str = 'auto', precision: str = 'fp32',
                  channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False,
                  num_threads: int = 0):
    """Runner for a ``.ts`` or ``.onnx`` file; its ``meta`` attribute holds the checkpoint meta. ``num_threads``:
    an ONNX model's intra-op pool (torch's count is the engine's, ``threads.use_threads``)."""
    suffix = Path(path).suffix
    if suffix not in ('.ts', '.onnx'):
        # a checkpoint renamed .pth was told only about exports
        raise CheckpointError(f'{path}: model files end in .pt (a checkpoint), .ts or .onnx (exports); '
                              'rename it to what it is')
    check_model_file(Path(path))
    check_readable(path)
    check_device_for(device, str(path))   # a bad device is the setting's fault, not the file's: not wrapped
    check_format(Path(path))
    try:
        if suffix == '.onnx':
            return OnnxRunner(path, device, precision, channels_last, compile, cuda_graphs, num_threads)
        return TorchScriptRunner(path, device, precision, channels_last, compile, cuda_graphs)
    except (ImportError, CheckpointError):
        raise
    except OSError as e:    # the name, not the file (files.text_path: not UTF-8): re-exporting it was no fix
        raise CheckpointError(f'{path}: {e.strerror or e}') from None
    except Exception as e:  # torch.jit / onnxruntime raise many types for bad files
        detail = one_line(ort_reason(str(e)), 300) if suffix == '.onnx' else \
            (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f'{path}: cannot load this exported model ({detail}); re-export it with '
                              f'`vidseg export`') from e
