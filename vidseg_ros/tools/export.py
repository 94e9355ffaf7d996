"""Export checkpoints to TorchScript (.ts) and ONNX (.onnx), checked against PyTorch.

Exported graphs keep the streaming split so the engine can still cache or carry state:

* key-frame models: ``forward_key(image) -> (logits, *cache)`` and
  ``forward_current(image, *cache) -> logits``. TorchScript holds both methods in one file; ONNX
  writes ``X.onnx`` (key frame) and ``X.current.onnx`` (current frame).
* recurrent and per-frame models: ``forward_step(image, *state) -> (logits, *state)``.

Which graphs to write comes from the model's ``StreamInfo`` (``models.contract``); logits come at
1/``output_stride`` of the input. The checkpoint meta travels inside the file (TorchScript extra file
``vidseg_meta.json``, ONNX ``metadata_props['vidseg_meta']``) together with the ``StreamInfo``, the size
the graphs were traced at (``traced_hw``) and the shapes of the cache or state there (``state_shapes``),
which ``vidseg info`` shows (``tools/exported_info.py``).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import signal
import threading
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from vidseg_ros.engine.backends import open_exported
from vidseg_ros.engine.onnx_runner import current_path
from vidseg_ros.engine.exported_checks import META_KEY
from vidseg_ros.files import check_replaceable
from vidseg_ros.models.blocks import fuse_conv_bn
from vidseg_ros.models.checkpoint import (check_meta, check_name_length, load_checkpoint, name_limit,
                                         write_file_atomic)
from vidseg_ros.models.contract import stream_info
from vidseg_ros.text import clip

log = logging.getLogger(__name__)

ONNX_OPSET = 17
# An export that differs more than this from PyTorch is refused (typical: 1e-7..1e-5 on float32 logits);
# relative to the logits' largest magnitude when that is above 1.
PARITY_TOL = 1e-3
SUFFIX = {'onnx': '.onnx', 'torchscript': '.ts'}     # what the engine loads each format from


def check_output(out: str | Path, fmt: str) -> Path:
    """``out`` (``~`` expanded) as a path the engine will load as ``fmt``; refused before anything is written."""
    out = Path(out).expanduser()
    if out.name == SUFFIX[fmt]:
        # Path('.onnx').suffix is '' (a hidden name without a suffix): the engine could not pick its runtime,
        # and the refusal below said 'onnx exports are .onnx files ..., got .onnx'
        raise ValueError(f'{str(out)[-200:]}: a {fmt} export needs a name before its suffix, e.g. '
                         f'{out.with_name("model" + SUFFIX[fmt])}')
    if out.suffix != SUFFIX[fmt] and os.path.isdir(out):     # a folder to export into: 'got runs' said nothing of it
        raise ValueError(f'{str(out)[-200:]} is a folder; give the file to write, e.g. '
                         f'{str(out / ("model" + SUFFIX[fmt]))[-200:]}')
    if out.suffix != SUFFIX[fmt]:
        raise ValueError(f'{fmt} exports are {SUFFIX[fmt]} files (the engine picks the runtime by suffix), '
                         f'got {str(out)[-200:]}')
    if fmt == 'onnx' and out.name.endswith('.current.onnx'):
        # the name of a key-frame export's second graph: written, it replaced the partner of the <stem>.onnx
        # beside it, whose pair the engine then refused as two exports
        raise ValueError(f'{clip(out.name, 60)}: names ending in .current.onnx are the second graph of a key-frame '
                         f'ONNX export (X.onnx + X.current.onnx); choose another name, e.g. '
                         f'{clip(out.name[:-len(".current.onnx")], 40)}.onnx')
    check_name_length(out, 'export')    # first: stat() of a name too long raises
    if out.is_dir():
        raise ValueError(f'{str(out)[-200:]} is a folder; give the file to write')
    # the staged export is renamed over out (os.replace): run as root, a FIFO or a device there (a link to
    # /dev/null) was replaced by a file
    check_replaceable(out, clip(out))
    return out


def _check_current_name(out: Path) -> None:
    """A key-frame ONNX export also writes ``<stem>.current.onnx``: refused, before anything is written, when
    that name is longer than the file system takes, or is a folder (the export failed at its end, the folder
    after the key-frame graph had replaced ``out``: the earlier pair was lost, the new graph had no partner)."""
    name, limit = os.fsencode(current_path(out).name), name_limit(out)
    if len(name) > limit:
        raise ValueError(f'export: a key-frame model\'s ONNX export also writes <stem>.current.onnx, here '
                         f'{len(name)} bytes, longer than its file system takes ({limit}); choose a name at least '
                         f'{len(name) - limit} bytes shorter than {clip(out.name, 60)}')
    if current_path(out).is_dir():
        raise ValueError(f'{str(current_path(out))[-200:]} is a folder: a key-frame model\'s ONNX export writes '
                         f'X.onnx and X.current.onnx; move the folder or choose another name')
    check_replaceable(current_path(out), clip(current_path(out)))


def _staged_name(out: Path) -> Path:
    """The hidden file beside ``out`` to export into: ``.<8 hex digits>-<8 random hex>.partial<suffix>``, short
    so any name the file system takes stages too (``.<stem>.partial<suffix>`` overran 255 bytes), with
    ``out``'s suffix (the parity check opens it by suffix), and this export's own: two exports to one
    target shared a staged file, and each failed its parity check on the other's graph."""
    digest = hashlib.sha1(os.fsencode(out.name)).hexdigest()[:8]
    return out.with_name(f'.{digest}-{uuid.uuid4().hex[:8]}.partial{out.suffix}')


@contextmanager
def _folder_locked(folder: Path):
    """``folder`` locked against the other exports' renames (flock on the folder: nothing left behind). Where the
    file system has no locks (some network and FUSE mounts) or the folder cannot be opened for reading, the
    renames go ahead unlocked, with a warning, as ``datasets.lock`` does: the export failed there at its end
    ('[Errno 95] Operation not supported', no file named) after all its work."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        fd, reason = None, e.strerror or e
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            os.close(fd)
            fd, reason = None, e.strerror or e
    if fd is None:
        log.warning('%s: cannot lock (%s): another export to the same file at the same time is not detected',
                    folder, reason)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)    # releases the lock


@contextmanager
def _staged(out: Path):
    """A hidden path beside ``out`` to export into; what was written there (``X`` and, for key-frame
    ONNX, ``X.current.onnx``) replaces ``out``'s files only when the block ends without error (after
    the parity check), so a failed export leaves an earlier good file as it was, and no half file. The
    files of a pair are renamed under the folder's lock, so two exports to one target leave one export's
    pair, not one file of each."""
    tmp = _staged_name(out)
    pairs = [(tmp, out), (current_path(tmp), current_path(out))]
    try:
        yield tmp     # SIGTERM too: the CLI raises it as an exception (tools/cli_errors.py), this cleans up
        with _folder_locked(out.parent), _signals_held():
            for src, dst in pairs:
                if src.exists():
                    os.replace(src, dst)
                elif dst != out and out.suffix == SUFFIX['onnx']:
                    _remove_old_partner(dst)
    finally:
        for src, _ in pairs:
            src.unlink(missing_ok=True)


@contextmanager
def _signals_held():
    """Ctrl-C (SIGINT) and SIGTERM wait until the block ends, then take effect as they would have (main thread;
    elsewhere Python runs no signal handler): a Ctrl-C between the two renames of a key-frame pair left the new
    X.onnx beside the earlier export's X.current.onnx, a pair the engine refuses. Handlers, not a signal mask: the
    kernel hands a process's signal to any thread not masking it (onnxruntime's and torch's pools). Taken inside
    the folder lock: a Ctrl-C still ends the wait for another export's renames."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    held = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(s) is not None}     # None: a handler set outside Python, which could not be put back
    try:
        yield
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(came):
            signal.raise_signal(s)      # now, to the handlers there were (KeyboardInterrupt, the default: exit)


def _remove_old_partner(path: Path) -> None:
    """Remove ``X.current.onnx``, the current-frame graph of the key-frame pair a one-graph ONNX export just
    replaced: left, it was another export's graph under the name of ``X.onnx``'s partner. A name too long to
    exist is no file; a file that cannot be removed is a warning (the export itself is in place)."""
    try:
        if path.is_file():
            path.unlink()
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            log.warning('%s is left from an earlier key-frame export (%s): remove it', path, e.strerror)


class _Method(nn.Module):
    """Exposes one method of a model as ``forward`` (ONNX exports one graph per entry point)."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args):
        return getattr(self.model, self.method)(*args)


class _Export(NamedTuple):
    model: nn.Module           # fused, eval mode
    info: dict                 # what the exported file carries: the checkpoint meta and the StreamInfo
    kind: str
    x: torch.Tensor            # an example input at the network size
    state: tuple               # an example cache / hidden state to trace the step with


def _prepare(checkpoint: str | Path, input_hw: tuple[int, int] | None, out: Path) -> _Export:
    """Everything both exporters start from; creates ``out``'s folder."""
    model, meta = load_checkpoint(checkpoint)       # meta checked: input_hw is [] or [H, W] in bounds
    if input_hw:                                     # an override is held to the same bounds
        check_meta({**meta, 'input_hw': list(input_hw)}, f'{checkpoint} (input_hw override)')
    fuse_conv_bn(model.eval())
    h, w = input_hw or meta['input_hw'] or (256, 256)
    stream = stream_info(model)
    if stream.kind == 'keyframe' and out.suffix == SUFFIX['onnx']:
        _check_current_name(out)
    s = stream.stride
    x = torch.randn(1, 3, -(-int(h) // s) * s, -(-int(w) // s) * s, generator=torch.Generator().manual_seed(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    state = _state_for(model, stream.kind, x)
    # one id per export, in every file it writes: the engine refuses a key-frame graph beside the current-frame
    # graph of another export (a pair half replaced when an export was killed between its two moves).
    # traced_hw and state_shapes are for `vidseg info` (the graphs' sizes are dynamic, so they do not say them)
    info = {'meta': meta, **stream.to_dict(), 'export_id': uuid.uuid4().hex, 'traced_hw': list(x.shape[-2:]),
            'state_shapes': [list(t.shape) for t in state]}
    return _Export(model, info, stream.kind, x, state)


def _state_for(model: nn.Module, kind: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Example cache (key frame of ``x``) or hidden state (one step on ``x``) to trace with."""
    with torch.no_grad():
        if kind == 'keyframe':
            return tuple(model.forward_key(x)[1:])
        if kind == 'recurrent':
            return tuple(model.forward_step(x)[1:])
    return ()


@torch.no_grad()
def reference_outputs(model: nn.Module, kind: str, x: torch.Tensor) -> list[torch.Tensor]:
    """PyTorch outputs of the streaming entry points on a 2-frame sequence (parity reference)."""
    x2 = x.flip(-1)
    if kind == 'keyframe':
        key = model.forward_key(x)
        return [key[0], model.forward_current(x2, *key[1:])]
    first = model.forward_step(x)
    return [first[0], model.forward_step(x2, *first[1:])[0]]


def exported_outputs(runner, kind: str, x: torch.Tensor) -> list[torch.Tensor]:
    """The same 2-frame sequence through an exported runner (``engine.backends``)."""
    x2 = x.flip(-1)
    if kind == 'keyframe':
        logits, cache = runner.key(x)
        return [logits, runner.current(x2, cache)]
    logits, state = runner.step(x, runner.init_state(x))
    return [logits, runner.step(x2, state)[0]]


@torch.inference_mode()
def parity(checkpoint_model: nn.Module, kind: str, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between PyTorch and the exported file on a key + follow-up frame; ValueError
    when it is beyond ``PARITY_TOL`` (the file would segment differently from the checkpoint)."""
    ref = reference_outputs(checkpoint_model, kind, x)
    runner = open_exported(path, device='cpu')
    got = exported_outputs(runner, kind, x)
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(ref, got))
    scale = max(1.0, max(float(a.float().abs().max()) for a in ref))
    if not diff <= PARITY_TOL * scale:    # NaN fails too
        raise ValueError(f'the exported graph differs from PyTorch by {diff:.3g} (tolerance {PARITY_TOL * scale:.3g}) '
                         'on a key + follow-up frame: not written; the other format may export correctly')
    return diff


def export_torchscript(checkpoint: str | Path, out: str | Path, input_hw: tuple[int, int] | None = None,
                       check: bool = True) -> dict:
    """Trace the checkpoint's streaming methods into one TorchScript file with its meta.

    Returns:
        ``{'files': [...], 'traced_hw': [H, W], 'max_abs_diff': float | None}``.
    """
    out = check_output(out, 'torchscript')
    model, info, kind, x, state = _prepare(checkpoint, input_hw, out)
    methods = ({'forward_key': (x,), 'forward_current': (x, *state)} if kind == 'keyframe'
               else {'forward_step': (x, *state)})
    with _staged(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch.jit deprecation notices; the result is checked below
            traced = torch.jit.trace_module(model, methods, check_trace=False)
            # into memory, then written by Python: torch.jit.save onto a full disk threw a C++ error that
            # aborted the process (SIGABRT), so the staged file was never removed
            buf = io.BytesIO()
            torch.jit.save(traced, buf, _extra_files={META_KEY + '.json': json.dumps(info)})
        with buf.getbuffer() as data:
            write_file_atomic(tmp, data, shown=out)
        diff = parity(model, kind, tmp, x) if check else None
    report = {'files': [str(out)], 'traced_hw': info['traced_hw'], 'max_abs_diff': diff}
    log.info('TorchScript %s: max abs diff vs PyTorch %s', out, report['max_abs_diff'])
    return report


def _onnx_graph(module: nn.Module, args: tuple, path: Path, in_names: list[str], out_names: list[str],
                info: dict, shown: Path) -> None:
    """One ONNX graph with dynamic batch/height/width and the meta in metadata_props, built in memory and written
    by ``write_file_atomic`` (synced; an OSError names ``shown``, the user's file: torch.onnx.export to the path
    said only '[Errno 27] File too large' on a full disk, or named the staged file)."""
    import onnx
    dyn = {n: {0: 'batch', 2: f'{n}_h', 3: f'{n}_w'} for n in in_names + out_names}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        # the TorchScript-based exporter handles our data-dependent interpolate sizes with
        # dynamic axes; the dynamo exporter needs symbolic-shape work on the stride check
        torch.onnx.export(module, args, buf, input_names=in_names, output_names=out_names,
                          dynamic_axes=dyn, opset_version=ONNX_OPSET, dynamo=False)
    graph = onnx.load_model_from_string(buf.getvalue())
    entry = graph.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(info)
    write_file_atomic(path, graph.SerializeToString(), shown=shown)


def export_onnx(checkpoint: str | Path, out: str | Path, input_hw: tuple[int, int] | None = None,
                check: bool = True) -> dict:
    """Export to ONNX (key-frame models: ``X.onnx`` + ``X.current.onnx``), checked on onnxruntime.

    Returns:
        ``{'files': [...], 'traced_hw': [H, W], 'max_abs_diff': float | None}``.
    """
    out = check_output(out, 'onnx')
    model, info, kind, x, state = _prepare(checkpoint, input_hw, out)
    names = [f'state_{i}' for i in range(len(state))]
    with _staged(out) as tmp:
        if kind == 'keyframe':
            names = [f'cache_{i}' for i in range(len(state))]
            _onnx_graph(_Method(model, 'forward_key'), (x,), tmp, ['image'], ['logits'] + names, info, out)
            _onnx_graph(_Method(model, 'forward_current'), (x, *state), current_path(tmp),
                        ['image'] + names, ['logits'], info, current_path(out))
            files = [str(out), str(current_path(out))]
        else:
            _onnx_graph(_Method(model, 'forward_step'), (x, *state), tmp, ['image'] + names,
                        ['logits'] + [f'{n}_out' for n in names], info, out)
            files = [str(out)]
        diff = parity(model, kind, tmp, x) if check else None
    report = {'files': files, 'traced_hw': info['traced_hw'], 'max_abs_diff': diff}
    log.info('ONNX %s: max abs diff vs PyTorch %s', out, report['max_abs_diff'])
    return report
