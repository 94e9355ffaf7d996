"""What an exported model file (``vidseg export``: ``.ts``, ``.onnx``) says about itself, for ``vidseg info``.

Files are read, never run (a deployed model may come from anyone):

* ONNX: parsed by the onnx package (protobuf: graph inputs/outputs, weights, metadata). Where only
  onnxruntime is installed (a runtime-only deployment), its session gives the inputs, outputs and metadata
  (a session is built, nothing is run) and the weights are not counted: a note says so.
* TorchScript: loaded as the engine loads it (``torch.jit.load`` compiles its code and runs no method); the
  metadata is read from the archive's extra file.

The meta is checked as the engine checks it (``exported_checks.exported_meta_info``), so info refuses what the node
would refuse, except a key-frame ONNX graph whose partner is missing or is the other export's: info says so in
``partner`` (that is the question a user deploying the pair asks it).
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vidseg_ros.engine.backends import check_model_file, open_exported
from vidseg_ros.engine.onnx_runner import current_path
from vidseg_ros.engine.exported_checks import (MAX_META_BYTES, META_KEY, check_format, check_onnx_io,
                                               check_onnx_tensors, exported_meta_info, onnx_model, ort_session,
                                               session_io)
from vidseg_ros.engine.model_paths import file_problem
from vidseg_ros.models.model_file_checks import CheckpointError, check_readable
from vidseg_ros.text import one_line

# onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16: the weights (integer initializers are shape constants)
FLOAT_TYPES = (1, 10, 11, 16)
CURRENT = '.current.onnx'


@dataclass
class _Read:
    """One exported file as read."""

    text: str                   # the vidseg_meta JSON ('{}' where there is none)
    graphs: dict                # {graph or method: {'inputs': {name: shape}, 'outputs': {name: shape}}}
    parameters: int | None      # weight values stored; None: not counted
    notes: list[str]
    io: tuple[list, list] | None = None   # ONNX: inputs, outputs in order as exported_checks.check_onnx_io takes them


def describe(path: Path) -> dict:
    """The ``vidseg info`` fields of an exported file: backend, meta (checked), kind, parameters, stride,
    output_stride, traced_hw, state, graphs, partner (key-frame ONNX: the other graph of the pair) and notes."""
    path = Path(path)
    check_model_file(path)
    check_readable(path)
    check_format(path)      # bytes of another format than the suffix, a truncated archive: one line
    read = _read_onnx(path) if path.suffix == '.onnx' else _read_torchscript(path)
    meta, stream = exported_meta_info(read.text, path)
    if read.io:     # the engine's checks of the graph against its metadata (TorchScript methods declare no shapes)
        check_onnx_io(path, stream, 'step' if stream.kind != 'keyframe' else 'current' if len(read.io[0]) > 1
                      else 'key', *read.io)
    extra = json.loads(read.text)       # a mapping: exported_meta_info checked it
    traced = _ints(extra.get('traced_hw'))
    if traced is None or len(traced) != 2:
        traced = None
        read.notes.append('traced_hw and state shapes were not recorded (exported by an earlier version); '
                          'export again to see them')
    role, partner = next(iter(read.graphs)), None
    if path.suffix == '.onnx' and stream.kind == 'keyframe':
        partner = _partner(path, read, extra.get('export_id'), stream)     # first: its graph adds to read.graphs
        if role == 'current':
            read.notes.append(f'this is the current-frame graph of a key-frame pair: the model to give the engine '
                              f'is {Path(partner["file"]).name}')
    return {'backend': 'onnx' if path.suffix == '.onnx' else 'torchscript', 'meta': meta, 'kind': stream.kind,
            'parameters': read.parameters, 'stride': stream.stride, 'output_stride': stream.output_stride,
            'traced_hw': traced, 'state': _state(stream, extra.get('state_shapes'), read.graphs),
            'graphs': read.graphs, 'partner': partner, 'notes': read.notes}


def _ints(value) -> list[int] | None:
    """``value`` as a list of non-negative ints ([H, W], a shape), or None when it is not one (the file is
    someone's: a wrong value there is shown as not recorded, not trusted)."""
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in value):
        return value
    return None


def _state(stream, shapes, graphs: dict) -> dict:
    """The tensors carried from frame to frame (key-frame cache or recurrent state): name -> shape at the traced
    size (recorded by export), else the graph's shape (batch, height, width symbolic), else None. Names are the
    ONNX graphs' (``cache_i``; ``state_i`` in, ``state_i_out`` out); a TorchScript method takes them in order."""
    prefix = 'cache' if stream.kind == 'keyframe' else 'state'
    shapes = shapes if isinstance(shapes, list) else []
    # inputs last: a graph's input shapes have their channel counts, its output shapes may have names for them
    seen = {n: s for g in graphs.values() for io in ('outputs', 'inputs') for n, s in g[io].items()}
    count = max(stream.cache_tensors, len(stream.state_layout), len(shapes),
                sum(1 for n in seen if re.fullmatch(prefix + r'_\d+', n)))
    return {f'{prefix}_{i}': (_ints(shapes[i]) if i < len(shapes) else None) or seen.get(f'{prefix}_{i}')
            for i in range(count)}


# ---- ONNX --------------------------------------------------------------------------------------
def _read_onnx(path: Path) -> _Read:
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        return _read_onnx_graph(onnx, path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModuleNotFoundError('reading an ONNX file needs onnx (or onnxruntime)', name='onnx') from None
    return _read_onnx_session(ort, path)


def _read_onnx_graph(onnx, path: Path) -> _Read:
    """Graph, weights and metadata by the onnx package (external weight files are not read: where they lie and
    their sizes are checked, as the engine checks them); where onnxruntime is installed, a session of it is
    built, not run: what the engine's runtime refuses (an op, opset or IR version it lacks) is refused here too,
    and the inputs and outputs are checked as the engine sees them (onnxruntime's shapes, where it infers others
    than the graph declares)."""
    model = onnx_model(path)    # CheckpointError when the bytes are no (complete) ONNX model
    graph = model.graph
    check_onnx_tensors(graph, path)     # each weight's data are there: its count below is what it holds
    weights = {i.name for i in graph.initializer}
    inputs = [(i.name, _dims(i), i.type.tensor_type.elem_type == 1) for i in graph.input if i.name not in weights]
    outputs = [(o.name, _dims(o), o.type.tensor_type.elem_type == 1) for o in graph.output]
    io = {'inputs': {n: s for n, s, _ in inputs}, 'outputs': {n: s for n, s, _ in outputs}}    # as declared
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        inputs, outputs = session_io(ort_session(ort, path, ['CPUExecutionProvider'], quiet=True))
    count = sum(math.prod(i.dims) for i in graph.initializer if i.data_type in FLOAT_TYPES)
    text = next((p.value for p in model.metadata_props if p.key == META_KEY), '{}')
    return _Read(text, {_role(io): io}, int(count), [], (inputs, outputs))


def _dims(value_info) -> list:
    """An ONNX input/output shape: ints where fixed, the axis name where dynamic ('batch', 'image_h')."""
    return [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _read_onnx_session(ort, path: Path) -> _Read:
    """Inputs, outputs and metadata by an onnxruntime session (built, not run); weights not counted."""
    sess = ort_session(ort, path, ['CPUExecutionProvider'], quiet=True)
    inputs, outputs = session_io(sess)
    io = {'inputs': {n: s for n, s, _ in inputs}, 'outputs': {n: s for n, s, _ in outputs}}
    text = sess.get_modelmeta().custom_metadata_map.get(META_KEY, '{}')
    return _Read(text, {_role(io): io}, None,
                 ['parameters not counted: onnxruntime does not list the weights; pip install onnx to count them'],
                 (inputs, outputs))


def _role(io: dict) -> str:
    """Which graph this is: 'key' (image -> logits, cache), 'current' (image, cache -> logits) or 'step'."""
    if any(n.startswith('cache_') for n in io['outputs']):
        return 'key'
    if any(n.startswith('cache_') for n in io['inputs']):
        return 'current'
    return 'step'


def _partner(path: Path, read: _Read, export_id, stream) -> dict:
    """The other graph of a key-frame ONNX pair: its file, whether it is there, the other role's graph as the
    engine checks it (a copy of X.onnx named X.current.onnx was 'present', 'same_export'; the engine refused the
    pair) and from the same export."""
    role = next(iter(read.graphs))
    if role == 'current':
        name = path.name[:-len(CURRENT)] if path.name.endswith(CURRENT) else path.stem
        other = path.with_name(name + '.onnx')
    else:
        other = current_path(path)
    problem = file_problem(other)      # a folder of that name was 'missing'
    entry = {'file': str(other), 'present': not problem}
    if problem:
        read.notes.append(f'{other.name} {problem}: the engine needs both files of a key-frame ONNX export, '
                          'side by side')
        return entry
    try:
        theirs = _read_onnx(other)
        their_id = json.loads(theirs.text).get('export_id')
        check_onnx_io(other, stream, 'key' if role == 'current' else 'current', *theirs.io)
    except (CheckpointError, ValueError, AttributeError) as e:
        entry['problem'] = one_line(str(e).replace(str(other), other.name), 200)   # 'file' has its folder
        read.notes.append(f'{other.name} cannot be its partner ({entry["problem"]}): the engine refuses the pair')
        return entry
    entry['parameters'] = theirs.parameters
    read.graphs.update(theirs.graphs)
    entry['same_export'] = None if export_id is None or their_id is None else export_id == their_id
    if entry['same_export'] is False:
        read.notes.append(f'{path.name} and {other.name} come from two exports: the engine refuses the pair; '
                          'export the model again')
    return entry


# ---- TorchScript -------------------------------------------------------------------------------
def _read_torchscript(path: Path) -> _Read:
    """Weights counted from the loaded module, metadata from the archive's ``extra/vidseg_meta.json``."""
    runner = open_exported(path, device='cpu')     # torch.jit.load; meta checked; no method run
    parameters = sum(p.numel() for p in runner.model.parameters())
    text = _extra_file(path)
    info = json.loads(text)
    entries = {'keyframe': ('forward_key', 'forward_current')}.get(runner.kind, ('forward_step',))
    graphs = {e: _method_io(e, runner.info, _ints(info.get('traced_hw')), info.get('state_shapes'))
              for e in entries}
    return _Read(text, graphs, int(parameters), [])


def _extra_file(path: Path) -> str:
    """``<archive>/extra/vidseg_meta.json`` of a TorchScript zip, or '{}' (the caller then says: not ours)."""
    with zipfile.ZipFile(path) as z:
        for item in z.infolist():
            if item.filename.endswith(f'/extra/{META_KEY}.json') and item.filename.count('/') == 2:
                if item.file_size > MAX_META_BYTES:
                    break
                return z.read(item).decode('utf-8', 'replace')
    return '{}'


def _method_io(entry: str, stream, traced: list[int] | None, shapes) -> dict:
    """A TorchScript method's positional inputs and outputs, named as the ONNX graphs name theirs, with their
    shapes at the traced size where export recorded it (None where not)."""
    shapes = [_ints(s) for s in shapes] if isinstance(shapes, list) else []
    n = max(stream.cache_tensors, len(stream.state_layout), len(shapes))
    state = [shapes[i] if i < len(shapes) else None for i in range(n)]
    prefix = 'cache' if stream.kind == 'keyframe' else 'state'
    names = [f'{prefix}_{i}' for i in range(n)]
    image = logits = None
    if traced and len(traced) == 2:
        h, w = traced
        image = [1, 3, h, w]
        logits = [1, stream.num_classes, -(-h // stream.output_stride), -(-w // stream.output_stride)]
    ins, outs = {'image': image}, {'logits': logits}
    if entry != 'forward_key':          # forward_current and forward_step take the cache / state
        ins.update(zip(names, state))
    if entry != 'forward_current':      # forward_key and forward_step return it
        outs.update(zip([n + '_out' if entry == 'forward_step' else n for n in names], state))
    return {'inputs': ins, 'outputs': outs}
