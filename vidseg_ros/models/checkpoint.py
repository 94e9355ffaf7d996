"""Checkpoint files: ``{'format': 'vidseg_ros/1', 'state_dict': ..., 'meta': plain dict}``.

Loaded with ``torch.load(weights_only=True)``, so a checkpoint can never run code; ``meta`` therefore
holds only plain Python values (dict, list, str, int, float, bool, None). Keys others rely on:
``arch``, ``arch_config``, ``classes``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``input_hw``,
``provenance``, ``metrics``, ``train_config``.

Every reader (``read_checkpoint``, hence ``load_checkpoint``: the engine and node, ``vidseg info / eval / export
/ finetune``, ``init_from``) and ``save_checkpoint`` check those values with ``check_meta`` and refuse weights
that are not all finite (``check_finite``); ``load_checkpoint`` checks the file's tensors against the shapes its
architecture has before it builds the model (``check_state_dict``). Those checks live in ``model_file_checks``.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import pickle
import shlex
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from vidseg_ros.config import ConfigError
from vidseg_ros.constants import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID, IMAGENET_MEAN, IMAGENET_STD
from vidseg_ros.files import name_limit, temp_path, write_file_atomic  # noqa: F401  (their home)
from vidseg_ros.models import create_model, resolve_arch_config
# CheckpointError and these checks are imported from here too (the checkpoint API), as well as from their home
from vidseg_ros.models.model_file_checks import (CheckpointError, REQUIRED_META, UnnamedChannels, check_archive,
                                                 check_crc, check_finite, check_meta, check_readable,
                                                 check_state_dict)
from vidseg_ros.text import clip

FORMAT = 'vidseg_ros/1'


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
    meta = check_meta(meta, f'{path} (not written)', getattr(model, 'num_classes', None))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(state, f'{path} (not written)')
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_torch_file({'format': FORMAT, 'state_dict': state, 'meta': meta}, path)


def save_torch_file(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; the one way this package writes a torch file (checkpoints,
    training states). Serialised in memory first (the file's size again, briefly: 10-50 MB here) because
    torch.save onto a full disk raised a C++ RuntimeError ('unexpected pos') in place of an OSError, and
    left its temp file; the bytes then go through ``write_file_atomic``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with buf.getbuffer() as data:
        return write_file_atomic(path, data)


def check_name_length(path: str | Path, what: str) -> None:
    """ConfigError, before anything is written, when ``path``'s file name is longer than its file system takes
    (it failed only at the end: 'File name too long')."""
    name, limit = os.fsencode(Path(path).name), name_limit(path)
    if len(name) > limit:
        raise ConfigError(f'{what}: the file name {clip(Path(path).name, 60)} is {len(name)} bytes, longer than '
                          f'its file system takes ({limit}); choose a shorter name')


def _plain(value):
    """Tuples -> lists, recursively (YAML and JSON round-trip the same way)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_torch_file(path: str | Path, map_location: str | torch.device = 'cpu', verify: bool = True):
    """``torch.load(path, weights_only=True)``; CheckpointError naming ``path`` when it is missing, truncated,
    not a torch file, holds objects that loading would have to run code for (never loaded then), is a zip
    archive that expands beyond its size (``check_archive``) or, with ``verify``, whose records' bytes differ from
    their CRC-32 (``check_crc``: torch.load checks none, so flipped bytes in a tensor loaded as other weights)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    check_readable(path)
    check_archive(path)
    if verify:
        check_crc(path)
    try:
        with warnings.catch_warnings():   # torch's advice to call torch.jit.load: the error below says what to do
            warnings.filterwarnings('ignore', message='.*looks like a TorchScript archive')
            # a plain pickle: torch's two-line advice came before our one line (the error below refuses it)
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError) as e:
        detail = str(e) or 'it ends early'
        raise CheckpointError(f'{path} is truncated or corrupt ({detail}); re-copy or re-export it') from e
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(e)
        if 'global' in reason.lower():      # a pickled object: loading it would run its code
            raise CheckpointError(f'{path} holds Python objects that weights_only loading refuses to run, so it '
                                  f'is not loaded ({reason})') from e
        raise CheckpointError(f'{path} is not a loadable torch checkpoint ({reason}){_onnx_hint(path)}') from e
    except Exception as e:  # torch.load raises many types for garbage input (KeyError, RuntimeError, ...)
        if 'TorchScript archive' in str(e):   # `vidseg export --format ts` output renamed to .pt
            raise CheckpointError(f'{path} is a TorchScript export, not a checkpoint: name it {path.stem}.ts (the '
                                  'suffix says how a model file is loaded)') from e
        detail = (str(e).splitlines() or [''])[0].split('. ')[0] or type(e).__name__   # torch's first sentence
        raise CheckpointError(f'{path} is not a torch checkpoint or is corrupt ({detail}){_onnx_hint(path)}') from e


def _onnx_hint(path: Path) -> str:
    """'; it looks like an ONNX export: name it X.onnx' for a file that starts as every ONNX model does (field 1,
    ir_version: tag 0x08) and is no zip archive; torch said only 'Unsupported operand 8' of a renamed .onnx."""
    try:
        with open(path, 'rb') as f:
            onnx_like = f.read(1) == b'\x08' and not zipfile.is_zipfile(path)
    except OSError:
        return ''
    return f'; it looks like an ONNX export: name it {path.stem}.onnx (the suffix says how a model file is loaded)' \
        if onnx_like else ''


def _unpickler_reason(error: Exception) -> str:
    """What torch's weights_only refusal found, without its advice to load with weights_only=False (which
    would run whatever code the file holds)."""
    text = str(error)
    if 'WeightsUnpickler error:' in text:
        reason = text.partition('WeightsUnpickler error:')[2]
    else:   # 'Trying to load unsupported GLOBAL posix.system whose module posix is blocked.' has no such prefix
        advice = ('Weights only load failed', 'Check the documentation')
        reason = next((p for p in text.split('\n\n') if p.strip() and not p.strip().startswith(advice)), '')
    # the first paragraph, without the advice to allowlist the global ('Please use ...add_safe_globals')
    reason = reason.strip().split('\n\n')[0].split(' Please use ')[0].strip()
    return reason or type(error).__name__


def read_checkpoint(path: str | Path, map_location: str | torch.device = 'cpu') -> dict:
    """The raw checkpoint dict, validated for format and meta keys (no model built)."""
    path = Path(path)
    data = load_torch_file(path, map_location)
    if isinstance(data, dict) and 'optimizer' in data and 'model' in data:
        raise CheckpointError(f'{path} is a training state (for `vidseg train --resume`), not a model: use '
                              'best.pt beside it, or the config\'s output file')
    if not isinstance(data, dict) or 'state_dict' not in data or 'meta' not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f'{path} is not a vidseg_ros checkpoint (expected keys format/state_dict/meta, '
                              f'got {keys}); save it with vidseg_ros.models.checkpoint.save_checkpoint')
    if data.get('format') != FORMAT:
        raise CheckpointError(f'{path}: unsupported checkpoint format {data.get("format")!r} (expected {FORMAT!r})')
    try:
        data['meta'] = check_meta(data['meta'], str(path))
    except UnnamedChannels as e:
        raise UnnamedChannels(_unnamed_channels(path, data['meta']) or str(e)) from None
    state = data['state_dict']
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: state_dict is a {type(state).__name__}, expected a mapping of '
                              'tensor names to tensors')
    # a str or a number where a tensor was failed in check_state_dict (AttributeError, TypeError), not here
    odd = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd:
        raise CheckpointError(f'{path}: state_dict maps {clip(repr(odd[0]), 60)} to a {type(odd[1]).__name__}, '
                              'expected tensor names to tensors')
    check_finite(data['state_dict'], str(path))
    return data


def _unnamed_channels(path: Path, meta) -> str | None:
    """The refusal of a checkpoint whose model has more output channels than ``meta['classes']`` names, with the
    command that names them (``add_class_names``); None for any other meta. The first release saved ``num_classes``
    as set (12 for CamVid with its void counted) beside the data's 11 names, and every reader refused such a file
    without a way out. Short: the CLI shows 400 characters of a message."""
    try:
        have, channels = len(meta['classes']), int(meta['arch_config']['num_classes'])
    except (TypeError, KeyError, ValueError):
        return None
    if not 0 < have < channels <= have + 16:
        return None
    void = meta['classes'] == CAMVID_CLASSES and channels == CAMVID_VOID + 1   # CamVid's void id is the 12th channel
    names = ['void'] if void else [f'class{i}' for i in range(have, channels)]
    which = f'channel {have}' if channels == have + 1 else f'channels {have}..{channels - 1}'
    why = 'counted CamVid\'s void' if void else 'set num_classes above them'
    return (f'{path}: meta.classes: {have} name(s) for {channels} output channels (an earlier version {why}); name '
            f'{which}: vidseg name-classes {shlex.join([str(path), *names])} (writes {_named(path).name})')


def _named(path: Path) -> Path:
    return path.with_name(f'{path.stem}-named{path.suffix}')


def add_class_names(path: str | Path, names: list[str], out: str | Path | None = None,
                    palette: list[list[int]] | None = None) -> Path:
    """Name the output channels a checkpoint's ``meta.classes`` lacks and write it to ``out`` (atomically); returns
    ``out``. The way out for the first release's checkpoints with more channels than names, which every reader
    refuses (``read_checkpoint`` says how to call this). The weights are left as they are.

    Args:
        path: the checkpoint.
        names: one name per unnamed channel, in channel order (channels len(classes) and up).
        out: where the named checkpoint goes; default ``<name>-named.pt`` beside ``path``.
        palette: a colour [r, g, b] per added name; default black (CamVid's void colour).
    """
    path = Path(path)
    out = Path(out) if out else _named(path)
    data = load_torch_file(path)
    meta = data.get('meta') if isinstance(data, dict) else None
    if not (isinstance(meta, dict) and data.get('format') == FORMAT and isinstance(data.get('state_dict'), dict)
            and isinstance(meta.get('classes'), list) and isinstance(meta.get('palette'), list)
            and isinstance(meta.get('arch_config'), dict)):
        read_checkpoint(path)           # says what the file is
        raise CheckpointError(f'{path}: not a vidseg_ros checkpoint')
    channels, have = meta['arch_config'].get('num_classes'), len(meta['classes'])
    if not isinstance(channels, int) or channels - have != len(names):
        need = f'{channels - have} name(s)' if isinstance(channels, int) and channels > have else 'no names'
        raise CheckpointError(f'{path}: names {have} classes for {channels} output channels: it needs {need}, '
                              f'got {len(names)}')
    added = [str(n) for n in names]
    colours = [list(map(int, c)) for c in (palette or [[0, 0, 0]] * len(added))]
    where = f'{out} (not written)'
    meta = check_meta(dict(meta, classes=meta['classes'] + added, palette=meta['palette'] + colours,
                           provenance=dict(meta.get('provenance') or {}, classes_added=added)), where)
    check_state_dict(build_model(meta, where, device='meta'), data['state_dict'], where)
    check_finite(data['state_dict'], where)
    return save_torch_file(dict(data, meta=meta), out)


def build_model(meta: dict, where: str, device: str | None = None) -> nn.Module:
    """The (untrained) model a checked ``meta`` describes; CheckpointError when its ``arch_config`` cannot
    build it or it has another number of output channels than ``meta['classes']`` names.

    ``device='meta'`` builds its shapes only, allocating nothing: what ``load_checkpoint`` checks the file's
    tensors against before it builds the model (an ``arch_config`` of width_mult 1000 asked for 9 GB)."""
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            model = create_model(meta['arch'], **meta['arch_config'])
    except (TypeError, ValueError, RuntimeError) as e:   # RuntimeError: torch's, e.g. out of memory
        raise CheckpointError(f'{where}: cannot build {meta["arch"]} from arch_config: {clip(e)}') from e
    check_meta(meta, where, getattr(model, 'num_classes', None))
    return model


def load_checkpoint(path: str | Path, map_location: str | torch.device = 'cpu') -> tuple[nn.Module, dict]:
    """Build the model described by the checkpoint's meta and load its weights -> (model in eval mode, meta)."""
    data = read_checkpoint(path, map_location)
    meta = data['meta']
    # the file's tensors against the shapes its arch_config builds, before the model is built: the file's own
    # size then bounds the model's (an arch_config of fpn_ch 10**6 asked for 36 TB: RuntimeError, or swap)
    check_state_dict(build_model(meta, str(path), device='meta'), data['state_dict'], str(path))
    model = build_model(meta, str(path))
    model.load_state_dict(data['state_dict'])
    return model.eval(), meta


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
