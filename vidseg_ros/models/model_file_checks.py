"""What a model file must pass before a model is built from it, for every reader (``models.checkpoint``: the
engine and node, ``vidseg info / eval / export / finetune``, ``init_from``; the exported-file checks of
``engine.exported_checks``) and for ``save_checkpoint``:

* the file: readable by this process (``check_readable``), a zip archive whose records expand to no more than
  its size allows (``check_archive``);
* its ``meta``: types, list lengths and ranges declared once on ``MetaValues`` with ``config.setting`` and
  checked by ``config.from_dict``, as for any setting; ``check_meta`` adds what a setting cannot say (one
  distinct name per output channel, one colour per class, the input size within ``max_input_pixels``, nesting
  at most ``MAX_META_DEPTH`` deep);
* its bytes: each stored record of the archive against the CRC-32 its zip headers hold (``check_crc``), which
  torch.load does not check: bytes flipped inside a tensor's data on a disk or in a copy loaded as other weights
  without a word;
* its tensors: all finite (``check_finite``: NaN or inf are the weights of a diverged training), and of the
  names, shapes and kinds of the architecture's (``check_state_dict``, against a model built on the meta device
  before the real one).
"""
from __future__ import annotations

import dataclasses
import mmap
import reprlib
import zipfile
import zlib
from pathlib import Path

import torch
from torch import nn

from vidseg_ros.config import ConfigError, from_dict, setting
from vidseg_ros.constants import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIDE_RANGE, MAX_CLASSES, MAX_INPUT_PIXELS
from vidseg_ros.models import MODELS, resolve_arch_config
from vidseg_ros.text import clip, name_problem

# What a model archive's records may expand to beyond twice its size (zip directory, pickles; see check_archive)
ARCHIVE_SLACK = 16 << 20

# Why a model, a training run or a label file holds at most MAX_CLASSES classes / ids.
CLASS_LIMIT = f'masks are mono8: at most {MAX_CLASSES} classes, ids 0..{MAX_CLASSES - 1}'

MAX_META_DEPTH = 32     # how deep a meta's dicts and lists may nest (the shipped models' nest 3 or 4)
REQUIRED_META = ('arch', 'arch_config', 'classes', 'palette', 'ignore_index', 'mean', 'std', 'input_hw',
                 'provenance', 'metrics', 'train_config')


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not match its architecture."""


class UnnamedChannels(CheckpointError):
    """``meta.classes`` names fewer classes than the model has output channels (``read_checkpoint`` says how to name
    them: the first release saved such files)."""


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
        error = UnnamedChannels if num_classes > len(classes) else CheckpointError
        raise error(f'{where}: meta.classes: {len(classes)} name(s) {reprlib.repr(classes)} for a model with '
                    f'{num_classes} output channels ({source})')
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


def damaged_records(path: str | Path) -> list[str]:
    """Names of the records of the zip archive ``path`` whose bytes differ from the CRC-32 its headers hold (torch.save
    writes it; torch.load never checks it). [] for a file that is no complete zip (the loaders say what it is). About
    1 ms per MB (measured: 13 ms for camvid_fpn's 14 MB float32 checkpoint, 53 ms for its 43 MB last.pt with AdamW
    state)."""
    try:
        with open(path, 'rb') as f, zipfile.ZipFile(f) as z:
            return _bad_crcs(f, z)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def _bad_crcs(f, z: zipfile.ZipFile) -> list[str]:
    """``damaged_records`` of the open archive ``z`` of file ``f``: stored records read in place (mapped, no copy),
    others through zipfile (which checks their CRC as it inflates)."""
    bad = []
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data, memoryview(data) as view:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                try:
                    with z.open(info) as record:
                        while record.read(1 << 20):
                            pass
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
                    bad.append(info.filename)
                continue
            head = info.header_offset      # local header: 30 bytes, then the name and the extra field, then the data
            start = head + 30 + int.from_bytes(view[head + 26:head + 28], 'little') + int.from_bytes(
                view[head + 28:head + 30], 'little')
            if zlib.crc32(view[start:start + info.compress_size]) != info.CRC:
                bad.append(info.filename)
    return bad


def crc_problem(path: str | Path) -> str:
    """'<path> is damaged: N of its records differ from the CRC-32 ...' when records of the archive ``path`` do
    (``damaged_records``); '' when none does. The start of every reader's line about it (``check_crc``, --resume)."""
    if bad := damaged_records(path):
        return (f'{path} is damaged: {len(bad)} of its records differ from the CRC-32 saved with them (first: '
                f'{clip(bad[0], 80)}; changed on the disk or in a copy)')
    return ''


def check_crc(path: str | Path) -> None:
    """CheckpointError '<path> is damaged' when records of the archive ``path`` differ from their CRC-32."""
    if problem := crc_problem(path):
        raise CheckpointError(f'{problem}; re-copy it from an intact copy')


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
