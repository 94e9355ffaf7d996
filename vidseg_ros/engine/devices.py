"""The device rule of every model runner: which device strings are accepted, what 'auto' resolves to, and
onnxruntime's execution providers for a device."""
from __future__ import annotations

from pathlib import Path

import torch

from vidseg_ros.text import short


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
