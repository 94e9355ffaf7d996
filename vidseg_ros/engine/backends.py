"""Model runners behind the stream engine: PyTorch modules, TorchScript and ONNX exports.

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

import numpy as np
import torch
from torch import nn

from vidseg_ros.engine.exported_checks import (META_KEY, check_format, check_key_graph, check_methods, check_onnx_io,
                                               check_same_export, exported_meta_info, onnx_weights, ort_reason,
                                               ort_session, session_io)
from vidseg_ros.engine.graphs import CudaGraphed
from vidseg_ros.engine.model_paths import file_problem
from vidseg_ros.models.blocks import fuse_conv_bn
from vidseg_ros.models.contract import StreamInfo, stream_info
from vidseg_ros.models.model_file_checks import CheckpointError, check_archive, check_finite, check_readable
from vidseg_ros.files import text_path
from vidseg_ros.text import one_line, short

log = logging.getLogger(__name__)


def current_path(path: str | Path) -> Path:
    """The ONNX current-frame graph that sits beside a key-frame model's ``X.onnx``."""
    path = Path(path)
    return path.with_name(path.stem + '.current.onnx')


def check_device(device: str) -> None:
    """Raise ValueError unless ``device`` is auto, cpu, or a CUDA device that exists here: the one device rule
    of the node's parameter, the engine, training, eval and bench (meta, mps, xpu, cpu:1 were taken as given
    and failed deep in torch). CUDA asked for where torch has none is an error, never a CPU fallback."""
    dev = _cuda_device(device)
    if dev is None:
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f'device {short(device, 60)}: CUDA is not available here; use auto or cpu')
    _check_index(device, dev, count)


def check_onnx_device(device: str, available: list[str]) -> None:
    """``check_device`` for an ONNX model run by onnxruntime with the ``available`` execution providers.

    The same device strings are refused (meta, mps, cpu:1...). CUDA needs onnxruntime's CUDAExecutionProvider,
    not a CUDA build of torch (a Jetson runs CPU torch beside onnxruntime-gpu); without that provider it is an
    error, as ``check_device`` gives for torch without CUDA, never a silent CPU run. The index is checked
    against torch's device count only where torch sees CUDA (onnxruntime does not count devices)."""
    dev = _cuda_device(device)
    if dev is None:
        return
    if 'CUDAExecutionProvider' not in available:
        raise ValueError(f'device {short(device, 60)}: onnxruntime has no CUDAExecutionProvider here (install '
                         f'onnxruntime-gpu); use auto or cpu')
    if torch.cuda.is_available():
        _check_index(device, dev, torch.cuda.device_count())


def _cuda_device(device: str) -> torch.device | None:
    """None for auto/cpu, the torch.device of cuda or cuda:N; ValueError for any other string."""
    if device in ('', 'auto', 'cpu'):
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f'device {short(device, 60)} is not a device: use auto, cpu, cuda or cuda:N') from None
    if dev.type != 'cuda':
        raise ValueError(f'device {short(device, 60)} is not supported; use auto, cpu, cuda or cuda:N')
    return dev


def _check_index(device: str, dev: torch.device, count: int) -> None:
    if dev.index is not None and dev.index >= count:
        raise ValueError(f'device {short(device, 60)} does not exist: {count} CUDA device(s) '
                         f'(cuda:0..cuda:{count - 1})')


def check_device_for(device: str, model_path: str) -> None:
    """The device rule of the runner that will serve ``model_path`` (a resolved model spec): the ONNX rule
    for ``.onnx`` files, the torch rule for everything else."""
    if str(model_path).endswith('.onnx'):
        import onnxruntime as ort  # optional: only ONNX models need it
        check_onnx_device(device, ort.get_available_providers())
    else:
        check_device(device)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; else cpu, cuda or cuda:N (``check_device``)."""
    check_device(device)
    if device in ('', 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def describe_device(device: str | torch.device) -> str:
    """The machine behind ``device`` in words, for model cards: the GPU's name, or the CPU count."""
    import os
    import platform
    dev = resolve_device(str(device))
    if dev.type == 'cuda':
        return f'GPU {torch.cuda.get_device_name(dev)}'
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return f'CPU only ({cores} cores available, {platform.machine()})'


_TORCH_DEFAULT_THREADS: list[int] = []   # torch's count before a num_threads setting first changed it


def torch_threads(num_threads: int) -> int:
    """The intra-op thread count an engine with setting ``num_threads`` runs torch at: that number, or for 0
    torch's own count where an earlier setting changed it (a running node set back to 0), else 0 (leave torch
    as it is: a trainer's or a user's torch.set_num_threads stays)."""
    if num_threads > 0:
        if not _TORCH_DEFAULT_THREADS:
            _TORCH_DEFAULT_THREADS.append(torch.get_num_threads())
        return num_threads
    return _TORCH_DEFAULT_THREADS[0] if _TORCH_DEFAULT_THREADS else 0


def use_threads(n: int) -> None:
    """torch at ``n`` intra-op threads (0: unchanged) in the calling thread. Called where the model runs: with
    OpenMP each thread keeps the count it first saw, so a count set in another thread (a loader, the
    parameter callback) did not reach a worker that had already run the model."""
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


class _Runner:
    """What every runner reports, read from its ``StreamInfo``."""

    info: StreamInfo

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def stride(self) -> int:
        return self.info.stride

    @property
    def output_stride(self) -> int:
        return self.info.output_stride

    def probe(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of one key frame of ``x`` (a step from zero state for other kinds), no state kept."""
        return self.key(x)[0] if self.kind == 'keyframe' else self.step(x, self.init_state(x))[0]


class TorchRunner(_Runner):
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
        return _zero_state(self.info.state_layout, x, self.device, torch.float32)


def _zero_state(layout: tuple[tuple[int, int], ...], x, device, dtype):
    """Zero hidden state: one (B, C, H/f, W/f) tensor per ``(C, f)`` of the exported state layout."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    return tuple(torch.zeros(b, c, -(-h // f), -(-w // f), device=device, dtype=dtype) for c, f in layout)


def onnx_providers(device: str, precision: str, available: list[str], cache_dir: Path) -> list:
    """onnxruntime execution providers, best first: TensorRT (fp16 when asked; engines cached beside
    the model) and CUDA when the device is a GPU and the provider is installed, CPU always last."""
    providers: list = ['CPUExecutionProvider']
    if not (device.startswith('cuda') or (device in ('', 'auto') and 'CUDAExecutionProvider' in available)):
        return providers
    index = int(device.split(':')[1]) if ':' in device else 0
    if 'CUDAExecutionProvider' in available:
        providers.insert(0, ('CUDAExecutionProvider', {'device_id': index}))
    if 'TensorrtExecutionProvider' in available:
        providers.insert(0, ('TensorrtExecutionProvider', {
            'device_id': index, 'trt_fp16_enable': precision == 'fp16', 'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache_dir)}))
    return providers


class OnnxRunner(_Runner):
    """``.onnx`` export(s) on onnxruntime: TensorRT, CUDA or CPU provider (``onnx_providers``); the device is
    checked by ``check_onnx_device`` (cuda without onnxruntime's CUDA provider is an error, as for torch)."""

    backend = 'onnx'

    def __init__(self, path: str | Path, device: str = 'auto', precision: str = 'fp32',
                 channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False):
        import onnxruntime as ort  # optional at import time of the package
        path = Path(path)
        check_onnx_device(device, ort.get_available_providers())   # also here: the runner may be built directly
        providers = onnx_providers(device, precision, ort.get_available_providers(), path.parent)
        if precision != 'fp32' and not any(p[0] == 'TensorrtExecutionProvider' for p in providers
                                           if isinstance(p, tuple)):
            log.warning('precision %s ignored for ONNX models without TensorRT (exported in fp32)', precision)
        self.device = torch.device('cpu')
        weights = onnx_weights(path)    # first: where its weights' data lie is checked before onnxruntime reads it
        self._main = ort_session(ort, path, providers)
        self.providers = self._main.get_providers()
        self.meta, self.info = exported_meta_info(
            self._main.get_modelmeta().custom_metadata_map.get(META_KEY, '{}'), path)
        check_finite(weights, str(path))    # exported before export refused such weights
        del weights
        self._cur = None
        if self.kind == 'keyframe':
            check_key_graph(self._main, path)
        check_onnx_io(path, self.info, 'key' if self.kind == 'keyframe' else 'step', *session_io(self._main))
        if self.kind == 'keyframe':
            cur = current_path(path)
            if not cur.is_file():
                raise CheckpointError(f'{path}: its key-frame pair {cur.name} is not beside it (move and rename '
                                      'X.onnx and X.current.onnx together)')
            weights = onnx_weights(cur)
            self._cur = ort_session(ort, cur, providers)
            check_same_export(self._main, self._cur, path, cur)
            check_finite(weights, str(cur))
            check_onnx_io(cur, self.info, 'current', *session_io(self._cur))

    @staticmethod
    def _run(sess, *arrays: torch.Tensor) -> list[np.ndarray]:
        names = [i.name for i in sess.get_inputs()]
        feeds = {n: a.detach().float().cpu().numpy() for n, a in zip(names, arrays)}
        return sess.run(None, feeds)

    @torch.inference_mode()
    def key(self, x):
        out = [torch.from_numpy(a) for a in self._run(self._main, x)]
        return out[0], tuple(out[1:])

    @torch.inference_mode()
    def current(self, x, cache):
        return torch.from_numpy(self._run(self._cur, x, *cache)[0])

    @torch.inference_mode()
    def step(self, x, state):
        out = [torch.from_numpy(a) for a in self._run(self._main, x, *state)]
        return out[0], tuple(out[1:])

    def init_state(self, x):
        return _zero_state(self.info.state_layout, x, 'cpu', torch.float32)


def check_model_file(path: Path) -> None:
    """CheckpointError unless ``path`` is a regular file (or a link to one), saying what it is otherwise
    (``model_paths.file_problem``): the one message of ``resolve_model``, ``open_exported`` and ``vidseg info``."""
    if problem := file_problem(path):
        raise CheckpointError(f'model file not found: {path}' if problem == 'is missing' else
                              f'model file {path} {problem}')


def open_exported(path: str | Path, device: str = 'auto', precision: str = 'fp32',
                  channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False):
    """Runner for a ``.ts`` or ``.onnx`` file; its ``meta`` attribute holds the checkpoint meta."""
    suffix = Path(path).suffix
    runners = {'.ts': TorchScriptRunner, '.onnx': OnnxRunner}
    if suffix not in runners:
        raise CheckpointError(f'{path}: exported models end in .ts or .onnx')
    check_model_file(Path(path))
    check_readable(path)
    check_device_for(device, str(path))   # a bad device is the setting's fault, not the file's: not wrapped
    check_format(Path(path))
    try:
        return runners[suffix](path, device, precision, channels_last, compile, cuda_graphs)
    except (ImportError, CheckpointError):
        raise
    except Exception as e:  # torch.jit / onnxruntime raise many types for bad files
        detail = one_line(ort_reason(str(e)), 300) if suffix == '.onnx' else \
            (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f'{path}: cannot load this exported model ({detail}); re-export it with '
                              f'`vidseg export`') from e
