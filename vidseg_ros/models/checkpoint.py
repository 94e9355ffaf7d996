"""Checkpoint files: ``{'format': 'vidseg_ros/1', 'state_dict': ..., 'meta': plain dict}``.

Loaded with ``torch.load(weights_only=True)``, so a checkpoint can never run code; ``meta`` therefore
holds only plain Python values (dict, list, str, int, float, bool, None). Keys others rely on:
``arch``, ``arch_config``, ``classes``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``input_hw``,
``provenance``, ``metrics``, ``train_config``.
"""
from __future__ import annotations

import datetime
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from vidseg_ros.constants import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID, IMAGENET_MEAN, IMAGENET_STD
from vidseg_ros.models import MODELS, create_model, resolve_arch_config

FORMAT = 'vidseg_ros/1'

REQUIRED_META = ('arch', 'arch_config', 'classes', 'palette', 'ignore_index', 'mean', 'std', 'input_hw',
                 'provenance', 'metrics', 'train_config')


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not match its architecture."""


def default_meta(arch: str, arch_config: dict | None = None, classes: list[str] | None = None,
                 palette: list[list[int]] | None = None, ignore_index: int | None = CAMVID_VOID,
                 input_hw: list[int] | tuple[int, int] = (360, 480), mean: list[float] | None = None,
                 std: list[float] | None = None, provenance: dict | None = None, metrics: dict | None = None,
                 train_config: dict | None = None) -> dict:
    """A complete meta dict; CamVid classes/palette and ImageNet normalisation unless given.

    ``arch_config`` is completed with the constructor defaults and ``num_classes`` = len(classes).
    """
    classes = list(CAMVID_CLASSES if classes is None else classes)
    palette = [list(map(int, c)) for c in (CAMVID_PALETTE if palette is None else palette)]
    if len(palette) < len(classes):
        raise ValueError(f'palette has {len(palette)} colours for {len(classes)} classes')
    config = dict(arch_config or {})
    config.setdefault('num_classes', len(classes))
    prov = {'data': '', 'trained': False, 'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
            'command': ''}
    prov.update(provenance or {})
    return {
        'arch': arch, 'arch_config': resolve_arch_config(arch, **config), 'classes': classes,
        'palette': palette[:len(classes)], 'ignore_index': ignore_index,
        'mean': list(mean or IMAGENET_MEAN), 'std': list(std or IMAGENET_STD),
        'input_hw': [int(v) for v in input_hw], 'provenance': prov, 'metrics': dict(metrics or {}),
        'train_config': dict(train_config or {}),
    }


def _check_plain(value, where: str = 'meta') -> None:
    """Reject values ``weights_only`` loading cannot restore (numpy, tensors, paths, objects)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f'{where}: keys must be strings, got {k!r}')
            _check_plain(v, f'{where}.{k}')
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f'{where}[{i}]')
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise CheckpointError(f'{where}: {type(value).__name__} is not a plain value '
                              f'(use str/int/float/bool/list/dict; e.g. str(path), float(x))')


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write model weights and ``meta`` atomically (temp file + rename); returns the path.

    ``meta['arch']``/``meta['arch_config']`` default to the model's own (set by ``create_model``).
    """
    meta = dict(meta)
    meta.setdefault('arch', getattr(model, 'arch', None))
    meta.setdefault('arch_config', getattr(model, 'arch_config', None))
    missing = [k for k in REQUIRED_META if k not in meta or (k in ('arch', 'arch_config') and meta[k] is None)]
    if missing:
        raise CheckpointError(f'meta lacks {", ".join(missing)}; build it with default_meta(arch, arch_config, ...)')
    meta = _plain(meta)
    _check_plain(meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + '.tmp')
    torch.save({'format': FORMAT, 'state_dict': state, 'meta': meta}, tmp)
    os.replace(tmp, path)
    return path


def _plain(value):
    """Tuples -> lists, recursively (YAML and JSON round-trip the same way)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_checkpoint(path: str | Path, map_location: str | torch.device = 'cpu') -> dict:
    """The raw checkpoint dict, validated for format and meta keys (no model built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f'{path} is truncated or corrupt ({e}); re-copy or re-export it') from e
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f'{path} is not a loadable torch checkpoint (weights_only=True refused it: '
                              f'{msg})') from e
    except Exception as e:  # torch.load raises many types for garbage input (KeyError, RuntimeError, ...)
        detail = (str(e).splitlines() or [''])[0] or type(e).__name__
        raise CheckpointError(f'{path} is not a torch checkpoint or is corrupt ({detail})') from e
    if isinstance(data, dict) and 'optimizer' in data and 'model' in data:
        raise CheckpointError(f'{path} is a training state (for `vidseg train --resume`), not a model: use '
                              'best.pt beside it, or the config\'s output file')
    if not isinstance(data, dict) or 'state_dict' not in data or 'meta' not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f'{path} is not a vidseg_ros checkpoint (expected keys format/state_dict/meta, '
                              f'got {keys}); save it with vidseg_ros.models.checkpoint.save_checkpoint')
    if data.get('format') != FORMAT:
        raise CheckpointError(f'{path}: unsupported checkpoint format {data.get("format")!r} (expected {FORMAT!r})')
    meta = data['meta']
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f'{path}: meta lacks {", ".join(missing)}')
    if meta['arch'] not in MODELS:
        raise CheckpointError(f'{path}: unknown architecture {meta["arch"]!r}; this version knows '
                              f'{", ".join(sorted(MODELS))}')
    return data


def load_checkpoint(path: str | Path, map_location: str | torch.device = 'cpu') -> tuple[nn.Module, dict]:
    """Build the model described by the checkpoint's meta and load its weights -> (model in eval mode, meta)."""
    data = read_checkpoint(path, map_location)
    meta = data['meta']
    try:
        model = create_model(meta['arch'], **meta['arch_config'])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: cannot build {meta["arch"]} from arch_config: {e}') from e
    check_state_dict(model, data['state_dict'], str(path))
    model.load_state_dict(data['state_dict'])
    return model.eval(), meta


def check_state_dict(model: nn.Module, state: dict, where: str = 'checkpoint') -> None:
    """Raise CheckpointError naming the first missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}'
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing key(s), first: {", ".join(missing[:3])}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected key(s), first: {", ".join(unexpected[:3])}')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatch(es), first: {"; ".join(shapes[:3])}')
    if problems:
        raise CheckpointError(f'{where}: state_dict does not match {getattr(model, "arch", type(model).__name__)} '
                              f'with its arch_config: ' + ' | '.join(problems))


def transfer_weights(model: nn.Module, state: dict, source: str = 'state_dict') -> dict:
    """Load every tensor of ``state`` whose name and shape match ``model``; the rest keep their fresh init.

    This is transfer learning to a new class set: a checkpoint with 11 classes initialises a 2-class
    model except for the classifier. Returns counts (and the first names) of tensors kept, re-initialised
    (shape differs, e.g. the classifier) and new (absent from ``state``), plus ``unused`` source tensors.
    """
    own = model.state_dict()
    kept = [k for k, v in own.items() if k in state and tuple(state[k].shape) == tuple(v.shape)]
    resized = [k for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    new = [k for k in own if k not in state]
    if len(kept) * 2 < len(own):   # e.g. another architecture: only a same-sized classifier would match
        raise CheckpointError(f'{source}: shares only {len(kept)} of {len(own)} tensors (same name and shape) '
                              f'with {getattr(model, "arch", type(model).__name__)} and its arch_config; '
                              'start from a checkpoint of the same architecture')
    # copy_ in load_state_dict casts, so float16-stored weights load into float32 models.
    model.load_state_dict({**own, **{k: state[k] for k in kept}})
    return {'from': source, 'kept': len(kept), 'reinitialised': len(resized) + len(new),
            'reinitialised_names': (resized + new)[:20], 'unused': sum(k not in own for k in state)}


def init_from_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """``transfer_weights`` from a checkpoint file; the report adds its classes, palette and licence."""
    data = read_checkpoint(path)
    report = transfer_weights(model, data['state_dict'], str(path))
    meta = data['meta']
    return dict(report, classes=list(meta['classes']), palette=list(meta['palette']),
                licence=str(meta['provenance'].get('licence', '')))
