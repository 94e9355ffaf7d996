"""Model commands for the `vidseg` CLI: export, info, bench. Plain functions returning dicts."""
from __future__ import annotations

import statistics
import time
from pathlib import Path


def export(model: str, out: Path, format: str = 'onnx', input_hw: list[int] | None = None) -> dict:
    """Export a checkpoint (path or model name) to ONNX or TorchScript with a parity check.

    Args:
        model: ``.pt`` path or a model name resolved like the node's ``model`` parameter.
        out: Output file (``.onnx`` / ``.ts``; key-frame ONNX also writes ``<out>.current.onnx``).
        format: 'onnx' or 'torchscript' (alias 'ts').
        input_hw: Example input size for tracing; default the checkpoint's ``input_hw``.
    """
    from vidseg_ros.engine.stream import resolve_model
    from vidseg_ros.tools.export import export_onnx, export_torchscript
    path = resolve_model(model)
    if not path.endswith('.pt'):
        raise ValueError(f'{path}: export needs a .pt checkpoint')
    fmt = {'ts': 'torchscript'}.get(format, format)
    if fmt not in ('onnx', 'torchscript'):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {format!r}")
    fn = export_onnx if fmt == 'onnx' else export_torchscript
    report = fn(path, out, tuple(input_hw) if input_hw else None)
    return {'checkpoint': path, 'format': fmt, **report}


def info(model: str) -> dict:
    """Architecture, classes, provenance and metrics of a checkpoint or exported model."""
    from vidseg_ros.engine.backends import open_exported
    from vidseg_ros.engine.stream import resolve_model
    from vidseg_ros.models import stream_info
    from vidseg_ros.models.checkpoint import build_model, check_meta, read_checkpoint
    path = resolve_model(model)
    if path.startswith('untrained:'):
        raise ValueError('info needs a model file, not an untrained:<arch> spec')
    if path.endswith('.pt'):
        meta = read_checkpoint(path)['meta']
        model = build_model(meta, path)
        kind = stream_info(model).kind
        params = sum(p.numel() for p in model.parameters())
        backend = 'torch'
    else:
        runner = open_exported(path, device='cpu')
        meta = check_meta(runner.meta, path, runner.info.num_classes)   # the meta a checkpoint carries
        kind, params, backend = runner.kind, None, runner.backend
    return {'file': path, 'backend': backend, 'arch': meta['arch'], 'kind': kind, 'parameters': params,
            'arch_config': meta['arch_config'], 'classes': meta['classes'], 'ignore_index': meta['ignore_index'],
            'input_hw': meta['input_hw'], 'trained': bool(meta['provenance'].get('trained', False)),
            'provenance': meta['provenance'], 'metrics': meta['metrics']}


def bench(model: str = '', frames: int = 30, input_hw: list[int] | None = None, device: str = 'auto',
          precision: str = 'fp32', channels_last: bool = False, keyframe_interval: int = 5,
          image_hw: list[int] | None = None) -> dict:
    """End-to-end engine latency on synthetic frames: median ms per stage, key vs current frames.

    Args:
        model: Like the node's ``model`` parameter ('' = default, name, path, ``untrained:<arch>``).
        frames: Frames to time (after 3 warm-up frames).
        input_hw: Network input size override.
        device, precision, channels_last: Engine settings.
        keyframe_interval: Fixed key-frame interval.
        image_hw: Camera image size fed to the engine; default the network input size.
    """
    import numpy as np

    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    cfg = EngineConfig(model=model, device=device, precision=precision, channels_last=channels_last,
                       input_hw=list(input_hw or []), keyframe_interval=keyframe_interval)
    engine = StreamSegmenter.from_checkpoint(cfg)
    h, w = image_hw or engine.net_hw
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    rows = []
    for i in range(frames + 3):
        img = np.roll(base, 2 * i, axis=1)  # a panning camera
        t = time.perf_counter()
        r = engine.step(img, i * 33_000_000)
        total = (time.perf_counter() - t) * 1e3
        if i >= 3:
            rows.append((r.is_key, r.timings_ms, total))

    def med(sel, key):
        vals = [t[key] if key != 'total' else tot for k, t, tot in rows if sel(k)]
        return round(statistics.median(vals), 2) if vals else None
    out = {'model': engine.model_name, 'device': engine.device, 'kind': engine.kind, 'net_hw': list(engine.net_hw),
           'image_hw': [h, w], 'frames': len(rows), 'key_frames': sum(k for k, _, _ in rows)}
    for name, sel in (('key', bool), ('current', lambda k: not k)):
        out[name] = {s: med(sel, s) for s in ('preprocess', 'model', 'postprocess', 'total')}
    out['mean_total_ms'] = round(statistics.mean(tot for _, _, tot in rows), 2)
    return out
