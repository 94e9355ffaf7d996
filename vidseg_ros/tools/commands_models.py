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
        input_hw: Network input size [H, W] to trace and parity-check at (padded up to a multiple of the
            stride; the file still defaults to the checkpoint's ``input_hw`` in the engine); default the
            checkpoint's ``input_hw``. Held to the range of the engine's ``input_hw`` setting.
    """
    from vidseg_ros.engine.stream import resolve_model
    if input_hw:
        from vidseg_ros.engine.base import EngineConfig, checked
        checked(EngineConfig(input_hw=list(input_hw)))      # the setting's range, in its words (as bench)
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
    """Architecture, classes, provenance and metrics of a checkpoint or exported model; for an exported file
    also its weight count, stride, the size it was traced at, its cache / state tensors, graphs' inputs and
    outputs and (key-frame ONNX) its partner file. Files are read, never run (``tools/exported_info.py``)."""
    from vidseg_ros.engine.stream import resolve_model
    from vidseg_ros.text import cut_fields     # provenance and metrics come from whoever made the file
    path = resolve_model(model)
    if path.startswith('untrained:'):
        raise ValueError('info needs a model file, not an untrained:<arch> spec')
    if path.endswith('.pt'):
        (meta, head), tail = _checkpoint_info(path), {}
    else:
        from vidseg_ros.tools.exported_info import describe
        tail = describe(Path(path))
        meta = tail.pop('meta')
        head = {k: tail.pop(k) for k in ('backend', 'kind', 'parameters', 'stride', 'output_stride')}
    return {'file': path, 'backend': head['backend'], 'arch': meta['arch'], 'kind': head['kind'],
            'parameters': head['parameters'], 'stride': head['stride'], 'output_stride': head['output_stride'],
            'arch_config': meta['arch_config'], 'classes': meta['classes'], 'ignore_index': meta['ignore_index'],
            'input_hw': meta['input_hw'], **tail, 'trained': bool(meta['provenance'].get('trained', False)),
            'provenance': cut_fields(meta['provenance']), 'metrics': cut_fields(meta['metrics'])}


def _checkpoint_info(path: str) -> tuple[dict, dict]:
    """(meta, the fields every model has) of a ``.pt`` checkpoint (weights_only load; the model's shapes built,
    without memory, and the file's tensors checked against them as the engine checks them)."""
    from vidseg_ros.models import stream_info
    from vidseg_ros.models.checkpoint import build_model, check_state_dict, read_checkpoint
    data = read_checkpoint(path)
    meta = data['meta']
    model = build_model(meta, path, device='meta')
    check_state_dict(model, data['state_dict'], path)   # info said nothing of weights the engine refuses
    stream = stream_info(model)
    head = {'backend': 'torch', 'kind': stream.kind, 'parameters': sum(p.numel() for p in model.parameters()),
            'stride': stream.stride, 'output_stride': stream.output_stride}
    return meta, head


def bench(model: str | None = None, frames: int = 30, input_hw: list[int] | None = None, device: str | None = None,
          precision: str | None = None, channels_last: bool | None = None, keyframe_interval: int | None = None,
          image_hw: list[int] | None = None, num_threads: int | None = None) -> dict:
    """End-to-end engine latency on synthetic frames: median ms per stage, key vs current frames.

    Args:
        model: Like the node's ``model`` parameter ('' = default, name, path, ``untrained:<arch>``).
        frames: Frames to time (after 3 warm-up frames), at least 1.
        input_hw: Network input size override.
        device, precision, channels_last, num_threads: Engine settings.
        keyframe_interval: Fixed key-frame interval.
        image_hw: Camera image size fed to the engine; default the network input size.

    An engine setting left None is ``EngineConfig``'s default (its one home; they were restated here).
    """
    import numpy as np

    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    if not (isinstance(frames, int) and frames >= 1):
        raise ValueError(f'frames must be at least 1, got {frames!r}')   # 0 ended in 'mean requires at least one'
    settings = {'model': model, 'device': device, 'precision': precision, 'channels_last': channels_last,
                'keyframe_interval': keyframe_interval, 'num_threads': num_threads}
    cfg = EngineConfig(**{k: v for k, v in settings.items() if v is not None}, input_hw=list(input_hw or []))
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
    out.update(engine.threads)      # what the timings ran at: torch_threads, or onnx_threads for an .onnx model
    for name, sel in (('key', bool), ('current', lambda k: not k)):
        out[name] = {s: med(sel, s) for s in ('preprocess', 'model', 'postprocess', 'total')}
    out['mean_total_ms'] = round(statistics.mean(tot for _, _, tot in rows), 2)
    return out
