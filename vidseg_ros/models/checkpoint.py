"""Checkpoint files: ``{'format': 'vidseg_ros/1', 'state_dict': ..., 'meta': plain dict}``.

Loaded with ``torch.load(weights_only=True)``, so a checkpoint can never run code; ``meta`` therefore
holds only plain Python values (dict, list, str, int, float, bool, None). Keys others rely on:
``arch``, ``arch_config``, ``classes``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``input_hw``,
``provenance``, ``metrics``, ``train_config``.

Every reader (``read_checkpoint``, hence ``load_checkpoint``: the engine and node, ``vidseg info / eval / export
/ finetune``, ``init_from``) and ``save_checkpoint`` check those values with ``check_meta``: their types, list
lengths and ranges are declared once on ``MetaValues`` with ``config.setting`` and checked by
``config.from_dict``, as for any setting; ``check_meta`` adds what a setting cannot say (one distinct name per
output channel, one colour per class, the input size within ``max_input_pixels``). Both also refuse weights that
are not all finite (``check_finite``: NaN or inf, the weights of a diverged training).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import os
import pickle
import reprlib
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from vidseg_ros.config import ConfigError, from_dict, setting
from vidseg_ros.constants import (CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID, IMAGENET_MEAN, IMAGENET_STD,
                                  INPUT_SIDE_RANGE, MAX_CLASSES, MAX_INPUT_PIXELS)
from vidseg_ros.models import MODELS, create_model, resolve_arch_config
from vidseg_ros.files import name_limit, temp_path, write_file_atomic  # noqa: F401  (their home)
from vidseg_ros.text import clip, name_problem

FORMAT = 'vidseg_ros/1'
# What a model archive's records may expand to beyond twice its size (zip directory, pickles; see check_archive)
ARCHIVE_SLACK = 16 << 20

# Why a model, a training run or a label file holds at most MAX_CLASSES classes / ids.
CLASS_LIMIT = f'masks are mono8: at most {MAX_CLASSES} classes, ids 0..{MAX_CLASSES - 1}'

MAX_META_DEPTH = 32     # how deep a meta's dicts and lists may nest (the shipped models' nest 3 or 4)
REQUIRED_META = ('arch', 'arch_config', 'classes', 'palette', 'ignore_index', 'mean', 'std', 'input_hw',
                 'provenance', 'metrics', 'train_config')


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not match its architecture."""


@dataclasses.dataclass
class MetaValues:
    """The values of a checkpoint's ``meta`` that its readers rely on, declared like settings (type, list
    lengths, ranges) so ``config.from_dict`` checks them; other meta keys (``weights_dtype``...) are free."""

    arch: str = setting('', 'Registry key of the architecture (models.MODELS)')
    arch_config: dict = setting({}, 'Constructor arguments of the architecture')
    classes: list[str] = setting([], 'Class names, one per output channel of the model')
    palette: list[list[int]] = setting([], 'Display colour [r, g, b] (0..255) per class')
    ignore_index: int | None = setting(None, 'Label value (8-bit labels) the metrics skip; null or -1 = none',
                                       range=(-1, 255))
    mean: list[float] = setting(list(IMAGENET_MEAN), 'Per-channel mean of RGB scaled to 0..1',
                                range=(0.0, 1.0), lengths=(3,))
    std: list[float] = setting(list(IMAGENET_STD), 'Per-channel standard deviation of RGB scaled to 0..1',
                               range=(0.001, 1.0), lengths=(3,))
    input_hw: list[int] = setting([], 'Network input size [H, W]; empty = each frame\'s size',
                                  range=INPUT_SIDE_RANGE, lengths=(0, 2))
    provenance: dict = setting({}, 'Where the weights come from (data, licence, command...)')
    metrics: dict = setting({}, 'Scores measured on the validation data')
    train_config: dict = setting({}, 'The training settings (training.config.TrainConfig)')


def check_meta(meta, where: str, num_classes: int | None = None) -> dict:
    """``meta`` with its values checked (``MetaValues``; mean/std as floats), else CheckpointError naming
    ``where`` (the file), the key and the value.

    ``num_classes``: the model's output channels when it is built; otherwise the ``num_classes`` its
    ``arch_config`` builds it with. Either must equal the number of class names.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f'{where}: meta is a {type(meta).__name__}, expected a mapping')
    if _nesting(meta) > MAX_META_DEPTH:
        # provenance nested 100000 lists deep loaded; `vidseg info` then died of RecursionError ('internal error')
        raise CheckpointError(f'{where}: meta is nested more than {MAX_META_DEPTH} levels deep (ours: 3 or 4)')
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f'{where}: meta lacks {", ".join(missing)}')
    names = [f.name for f in dataclasses.fields(MetaValues)]
    try:
        values = from_dict(MetaValues, {k: meta[k] for k in names}, where='meta.')
    except ConfigError as e:
        raise CheckpointError(f'{where}: {clip(e)}') from None

    def bad(key: str, problem: str):
        return CheckpointError(f'{where}: meta.{key}: {problem}')

    if values.arch not in MODELS:
        raise CheckpointError(f'{where}: unknown architecture {clip(values.arch, 60)!r}; this version knows '
                              f'{", ".join(sorted(MODELS))}')
    classes, palette = values.classes, values.palette
    if not classes or not all(c.strip() for c in classes) or len(set(classes)) != len(classes):
        raise bad('classes', f'expected distinct non-empty class names, one per output channel, got '
                             f'{reprlib.repr(classes)}')
    if len(classes) > MAX_CLASSES:
        raise bad('classes', f'{len(classes)} classes; {CLASS_LIMIT}')
    # names are shown raw in logs, /diagnostics, plots and the model card: an ESC or a line break in a
    # downloaded model's names would drive the terminal or forge a log line, a 10 MB name fill each of them
    if problem := name_problem(classes, 'class names'):
        raise bad('classes', problem)
    source = 'its classifier'
    if num_classes is None:
        try:
            num_classes = resolve_arch_config(values.arch, **values.arch_config).get('num_classes')
        except (TypeError, ValueError) as e:
            raise CheckpointError(f'{where}: cannot build {values.arch} from arch_config: {clip(e)}') from None
        source = 'arch_config.num_classes'
    if num_classes is not None and num_classes != len(classes):
        raise bad('classes', f'{len(classes)} name(s) {reprlib.repr(classes)} for a model with {num_classes} '
                             f'output channels ({source})')
    if len(palette) != len(classes):
        raise bad('palette', f'{len(palette)} colour(s) for {len(classes)} classes; expected one [r, g, b] per '
                             'class')
    for i, colour in enumerate(palette):
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise bad(f'palette[{i}]', f'{reprlib.repr(colour)} is not [r, g, b] with values 0..255')
    if len(values.input_hw) == 2 and values.input_hw[0] * values.input_hw[1] > MAX_INPUT_PIXELS:
        h, w = values.input_hw
        raise bad('input_hw', f'{h}x{w} = {h * w} pixels exceeds max_input_pixels {MAX_INPUT_PIXELS}')
    return {**meta, **{k: getattr(values, k) for k in names}}


def _nesting(value, stop: int = MAX_META_DEPTH + 1) -> int:
    """How deep lists and dicts nest in ``value`` (a bare value: 0), counted up to ``stop``; iterative, so a
    value nested deeper than Python recurses is measured too."""
    deepest, todo = 0, [(value, 1)]
    while todo and deepest < stop:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return deepest


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


def check_readable(path: str | Path) -> None:
    """CheckpointError 'cannot read X: Permission denied' for a model file this process may not read: torch.load
    called it 'not a torch checkpoint or is corrupt', onnxruntime's and the format sniffing's PermissionError was
    no CheckpointError at all."""
    try:
        with open(path, 'rb'):
            pass
    except OSError as e:
        raise CheckpointError(f'cannot read {path}: {e.strerror or e}') from None


def check_archive(path: str | Path) -> None:
    """CheckpointError when the zip archive ``path`` (a checkpoint, a TorchScript export) declares records that
    expand to more than its size on disk allows. torch.save and torch.jit.save store records uncompressed, but
    both loaders inflate deflated ones: a 3 MB checkpoint of one deflated 2 GiB zero tensor took 6 GB of memory
    in `vidseg info` (the node would be killed for it). A file that is no complete zip is left to the loaders."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            expanded = sum(item.file_size for item in z.infolist())
        size = path.stat().st_size
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    if expanded > 2 * size + ARCHIVE_SLACK:
        raise CheckpointError(f'{path}: its records expand to {expanded} bytes from a {size}-byte file (compressed: '
                              'torch.save and torch.jit.save store them as they are); not loaded')


def load_torch_file(path: str | Path, map_location: str | torch.device = 'cpu'):
    """``torch.load(path, weights_only=True)``; CheckpointError naming ``path`` when it is missing, truncated,
    not a torch file, holds objects that loading would have to run code for (never loaded then), or is a zip
    archive that expands beyond its size (``check_archive``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    check_readable(path)
    check_archive(path)
    try:
        with warnings.catch_warnings():   # torch's advice to call torch.jit.load: the error below says what to do
            warnings.filterwarnings('ignore', message='.*looks like a TorchScript archive')
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
    data['meta'] = check_meta(data['meta'], str(path))
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


def check_finite(state: dict, where: str) -> None:
    """CheckpointError naming ``where`` and the first tensors when a floating tensor of ``state`` holds NaN or inf.

    Such weights come from a training that diverged; they loaded, exported and served masks of class 0 everywhere
    (confidence NaN) without a word, and eval even scored them perfectly stable."""
    bad = nonfinite_keys(state)
    if bad:
        raise CheckpointError(f'{where}: {len(bad)} weight tensor(s) hold NaN or inf, first: {", ".join(bad[:3])}; '
                              'these are the weights of a diverged training (lower the learning rate and train '
                              'again)')


def nonfinite_keys(state: dict) -> list[str]:
    """Names of the floating tensors of ``state`` that hold NaN or inf (one cheap pass each)."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


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


def check_state_dict(model: nn.Module, state: dict, where: str = 'checkpoint') -> None:
    """Raise CheckpointError naming the first missing/unexpected keys, shape mismatches and tensors of another
    kind (complex, integer or bool where the model has floats...: load_state_dict cast them without a word)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    if odd := [str(k) for k in own if k in state and not isinstance(state[k], torch.Tensor)]:
        raise CheckpointError(f'{where}: state_dict holds {len(odd)} value(s) that are no tensors, first: '
                              f'{clip(", ".join(odd[:3]), 200)}')
    shapes = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}'
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    types = [f'{k}: file {state[k].dtype} vs model {v.dtype}'
             for k, v in own.items() if k in state and _dtype_kind(state[k]) != _dtype_kind(v)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing key(s), first: {", ".join(missing[:3])}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected key(s), first: {", ".join(unexpected[:3])}')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatch(es), first: {"; ".join(shapes[:3])}')
    if types:
        problems.append(f'{len(types)} type mismatch(es), first: {"; ".join(types[:3])}')
    if problems:
        raise CheckpointError(f'{where}: state_dict does not match {getattr(model, "arch", type(model).__name__)} '
                              f'with its arch_config: ' + ' | '.join(problems))


def _dtype_kind(t: torch.Tensor) -> str:
    """'complex', 'float', 'bool' or 'int': float16 weights load into a float32 model, an int64 tensor does not."""
    if t.is_complex():
        return 'complex'
    return 'float' if t.is_floating_point() else 'bool' if t.dtype == torch.bool else 'int'


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
