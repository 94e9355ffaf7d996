"""Checks of exported model files (``vidseg export``: ``.ts``, ``.onnx``), made before and as they load, by the
engine's runners (``backends``) and by ``vidseg info`` (``tools.exported_info``), so both refuse the same files:

* the bytes are the format the suffix says (``check_format``);
* the ``vidseg_meta`` metadata: its size, JSON, meta (``check_meta``) and stream fields (``exported_meta_info``);
* TorchScript: the methods the metadata's kind is run through, with as many tensors (``check_methods``);
* ONNX: the file within protobuf's 2 GiB (``check_onnx_size``), its weights' stored data in the model's folder
  and as long as their shapes (``check_onnx_tensors``), its inputs and outputs as the metadata says
  (``check_onnx_io``), a key-frame pair of one export (``check_same_export``), and onnxruntime's refusals
  in one line (``ort_session``, ``ort_reason``).
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from vidseg_ros.constants import MAX_CLASSES
from vidseg_ros.models.contract import StreamInfo
from vidseg_ros.engine.threads import onnx_options
from vidseg_ros.models.model_file_checks import CheckpointError, check_meta
from vidseg_ros.files import text_path
from vidseg_ros.text import clip, one_line, short

META_KEY = 'vidseg_meta'          # ONNX metadata_props key / TorchScript extra file stem
MAX_META_BYTES = 16 << 20          # the metadata is a few kB; a larger one is not ours
MAX_ONNX_BYTES = 2 ** 31 - 1       # protobuf's limit on one message: an .onnx file is never larger
# Bounds on an exported file's stream fields (ours: stride 8..32, up to 3 state tensors of 128 channels)
MAX_STRIDE = 1024
MAX_STATE_TENSORS = 64
MAX_STATE_CHANNELS = 8192


def check_methods(module, stream: StreamInfo, path) -> None:
    """CheckpointError unless a TorchScript module has the methods its metadata's kind is run through, each
    taking and returning as many tensors as the engine passes and reads. A forward_step(x) in a file saying
    'recurrent' loaded and then failed on every frame ('expected at most 2 argument(s) but received 5'), one
    returning a bare tensor as "axes don't match array"; the methods' declared types cannot run any code."""
    def count(name: str) -> tuple[int, int]:
        method = getattr(module, name, None)
        if method is None:
            raise CheckpointError(f'{path} has no {name} method: it is no TorchScript export of a {stream.kind} '
                                  'model (its metadata says so); export the model again')
        schema = method.schema
        out = schema.returns[0].type if len(schema.returns) == 1 else None
        outs = len(out.elements()) if isinstance(out, torch.TupleType) else len(schema.returns)
        return len(schema.arguments) - 1, outs     # - self
    if stream.kind == 'keyframe':
        key, current = count('forward_key'), count('forward_current')
        cache = stream.cache_tensors or key[1] - 1      # not recorded by earlier exports
        found, want = {'forward_key': key, 'forward_current': current}, {'forward_key': (1, 1 + cache),
                                                                          'forward_current': (1 + cache, 1)}
    else:
        state = len(stream.state_layout)
        found, want = {'forward_step': count('forward_step')}, {'forward_step': (1 + state, 1 + state)}
    for name, (ins, outs) in want.items():
        if found[name] != (ins, outs):
            raise CheckpointError(f'{path}: its {name} takes {found[name][0]} and returns {found[name][1]} tensor(s); '
                                  f'its {stream.kind} metadata says {ins} and {outs}; export the model again')


def exported_meta_info(text: str | bytes, path) -> tuple[dict, StreamInfo]:
    """(meta, StreamInfo) from an exported file's ``vidseg_meta`` JSON, the meta checked as a checkpoint's is
    (``check_meta``): files exported before that check, or edited since, could carry 3 class names for a
    2-channel model, a zero std or a palette of 300s into the engine; the stream fields are checked by
    ``_stream_fields`` (types and ranges)."""
    # bytes, as the limit says (6M '€' counted as characters passed the 16 MiB limit as 18 MB); a text longer
    # than the limit in characters is over it in bytes too, and is not encoded
    # (torch.jit.load gives the text as bytes, onnx as str)
    if len(text) > MAX_META_BYTES or (isinstance(text, str)
                                      and len(text.encode('utf-8', 'surrogatepass')) > MAX_META_BYTES):
        raise CheckpointError(f'{path}: its {META_KEY} metadata is over {MAX_META_BYTES >> 20} MiB (ours are a few '
                              'kB): not loaded')
    try:
        info = json.loads(text)
    except (ValueError, RecursionError) as e:   # RecursionError: '[[[[...' nested 100000 deep
        raise CheckpointError(f'{path}: its {META_KEY} metadata is not valid JSON ({clip(e, 120)}); export the '
                              'model again') from None
    if not isinstance(info, dict) or 'meta' not in info:
        # someone else's model (or ours exported by other means): re-exporting it is not the user's fix
        raise CheckpointError(f'{path} has no vidseg_ros metadata (classes, normalisation): not written by '
                              '`vidseg export`, whose files alone run here')
    num_classes = _whole(info, 'num_classes', None, (1, MAX_CLASSES), path)
    meta = check_meta(info['meta'], str(path), num_classes)
    return meta, _stream_fields(info, len(meta['classes']), path)


def _whole(info: dict, key: str, default, bounds: tuple[int, int], path) -> int | None:
    """``info[key]`` (``default`` when absent; required where that is ...), an int within ``bounds``, else
    CheckpointError naming the file."""
    if key not in info and default is not ...:
        return default
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
        raise CheckpointError(f'{path}: {META_KEY}.{key} is {clip(repr(value), 40)}, expected an integer '
                              f'{bounds[0]}..{bounds[1]}; export the model again')
    return value


def _stream_fields(info: dict, num_classes: int, path) -> StreamInfo:
    """The StreamInfo of exported metadata, each field checked: a state_layout of 'x' failed as 'not enough values
    to unpack', a downsampling factor 0 as ZeroDivisionError and a stride of 10**9 as an allocation error, on every
    frame the node was sent (those were not checked at load)."""
    stride = _whole(info, 'stride', ..., (1, MAX_STRIDE), path)
    _whole(info, 'output_stride', ..., (1, stride), path)
    _whole(info, 'cache_tensors', 0, (0, MAX_STATE_TENSORS), path)
    layout = info.get('state_layout', [])
    pair = (lambda e: isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                    for v in e)
            and 1 <= e[0] <= MAX_STATE_CHANNELS and 1 <= e[1] <= MAX_STRIDE)
    if not isinstance(layout, list) or len(layout) > MAX_STATE_TENSORS or not all(pair(e) for e in layout):
        raise CheckpointError(f'{path}: {META_KEY}.state_layout is {clip(repr(layout), 60)}, expected [channels, '
                              f'downsampling] pairs (1..{MAX_STATE_CHANNELS}, 1..{MAX_STRIDE}); export the model again')
    try:
        return StreamInfo.from_dict(info, num_classes)
    except (ValueError, TypeError) as e:    # kind unknown, or at odds with the cache / state it declares
        raise CheckpointError(f'{path}: {META_KEY}: {clip(e, 120)}; export the model again') from None


def onnx_model(path: Path):
    """The ModelProto of ``path`` as the onnx package parses it, external data not read; None where onnx is not
    installed. CheckpointError when the bytes are no (complete) ONNX model."""
    try:
        import onnx
    except ImportError:
        return None
    check_onnx_size(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and others
        raise CheckpointError(f'{path} is not a complete ONNX model (truncated or corrupt); re-copy or re-export '
                              'it') from e
    if not model.graph.output:      # an empty file parses as an empty model
        raise CheckpointError(f'{path} is not a complete ONNX model (it has no graph); re-copy or re-export it')
    return model


def check_onnx_size(path: Path) -> None:
    """CheckpointError for an .onnx file over protobuf's 2 GiB limit on one message, before it is read: onnx.load
    and onnxruntime read it all first, so a sparse 20 GB file (4 kB on disk) took 20 GB of memory to be refused
    as corrupt. Larger models keep their weights in external data files, which are not counted here."""
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise CheckpointError(f'{path} is {size} bytes: an ONNX file holds at most 2 GiB (protobuf\'s limit; larger '
                              'weights lie in external data files beside it): not read')


# bytes per value of the tensor types whose stored size check_onnx_tensors checks (onnx.TensorProto numbers)
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def check_onnx_tensors(graph, path: Path) -> None:
    """CheckpointError when a weight of ``graph`` holds another amount of data than its shape declares, or keeps
    it in a file that is not in the model's folder: an absolute path, '..' or a link out of the folder (never
    opened: a model is no way to read other files), a missing file, or one too short for it. onnxruntime
    refuses most of these too, in a message of C++ source lines clipped before the reason, and printed its own
    ERROR log line beside it; ``onnx.numpy_helper`` read a relative location from the working directory."""
    folder = path.parent.resolve()
    for t in _graph_tensors(graph):
        item, name = _ITEM_BYTES.get(t.data_type), clip(t.name, 60)
        need = math.prod(t.dims) * item if item else None
        if t.data_location != 1:    # onnx.TensorProto.EXTERNAL
            values = len(t.raw_data) // item if item and t.HasField('raw_data') else None
            if item and values is None:     # typed fields (float_data, int64_data...): one entry per value
                values = max(len(t.float_data), len(t.int32_data), len(t.int64_data), len(t.double_data),
                             len(t.uint64_data))
            if need is not None and values * item != need:
                raise CheckpointError(f'{path}: weight {name} declares shape {list(t.dims)[:8]} but holds '
                                      f'{values} values; re-export the model')
            continue
        entries = {e.key: e.value for e in t.external_data}
        location = entries.get('location', '')
        file = path.parent / location
        if not location or Path(location).is_absolute() or '..' in Path(location).parts \
                or folder not in _resolved(file).parents:
            raise CheckpointError(f'{path}: weight {name} is stored in {short(location, 80)}, outside the model\'s '
                                  'folder: not read (a model keeps its weights beside it)')
        if not file.is_file():
            why = 'is not a regular file' if file.exists() else 'is missing'
            raise CheckpointError(f'{path}: weight {name} is stored in {short(location, 80)}, which {why}; copy it '
                                  'with the model')
        try:
            offset, length = int(entries.get('offset', 0)), int(entries.get('length', need or 0))
        except ValueError:
            raise CheckpointError(f'{path}: weight {name} has an external data offset or length that is no number') \
                from None
        size = file.stat().st_size
        if offset < 0 or (need is not None and length != need) or offset + length > size:
            raise CheckpointError(f'{path}: weight {name} needs bytes {offset}..{offset + length} of '
                                  f'{short(location, 80)} ({need} bytes), which holds {size}: truncated or not its '
                                  'data; re-copy the model')


def _graph_tensors(graph):
    """Every tensor stored in ``graph``: its initializers and those of its nodes' attributes (a Constant's value),
    subgraphs (If, Loop bodies) included; iterative."""
    graphs = [graph]
    while graphs:
        g = graphs.pop()
        yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField('t'):
                    yield attr.t
                yield from attr.tensors
                graphs.extend([attr.g] if attr.HasField('g') else [])
                graphs.extend(attr.graphs)


def _resolved(path: Path) -> Path:
    """``path`` with its links followed; itself where they loop (Python 3.11 raised RuntimeError)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path('/')


def onnx_weights(path: Path) -> dict:
    """The floating initializers (the weights) of an .onnx file as tensors, for ``check_finite``, after
    ``check_onnx_tensors``; {} where the onnx package is absent (onnxruntime cannot list them; a runtime-only
    install skips the check, and onnxruntime's own check of external data locations is the only one)."""
    model = onnx_model(path)
    if model is None:
        return {}
    from onnx import numpy_helper
    check_onnx_tensors(model.graph, path)
    floats = {1, 10, 11}    # FLOAT, FLOAT16, DOUBLE
    # external data relative to the model's folder (the default base_dir '' read it from the working directory)
    return {i.name: torch.from_numpy(np.array(numpy_helper.to_array(i, str(path.parent))))
            for i in model.graph.initializer if i.data_type in floats}


def session_io(sess) -> tuple[list, list]:
    """An onnxruntime session's inputs and outputs in order, as ``check_onnx_io`` takes them."""
    return ([(i.name, list(i.shape), i.type == 'tensor(float)') for i in sess.get_inputs()],
            [(o.name, list(o.shape), o.type == 'tensor(float)') for o in sess.get_outputs()])


def check_onnx_io(path: Path, stream: StreamInfo, role: str, inputs: list, outputs: list) -> None:
    """CheckpointError when an ONNX graph's inputs and outputs (``[(name, shape, is float32)]`` in order; a shape
    holds ints where fixed) are not what its metadata's ``stream`` has the engine feed and read: ``role`` 'step'
    (image, *state -> logits, *state), 'key' (image -> logits, *cache) or 'current' (image, *cache -> logits).
    Such a graph loaded and then failed on every frame (an input of 1 channel, a fixed size), or served: logits
    of 7 channels for 2 class names, state tensors its metadata did not declare left out."""
    n = len(stream.state_layout) if role == 'step' else stream.cache_tensors
    if role != 'step' and not n:    # exported before cache_tensors was recorded
        n = max(0, len(outputs) - 1 if role == 'key' else len(inputs) - 1)
    want = (1 if role == 'key' else 1 + n, 1 if role == 'current' else 1 + n)
    carried = 'state' if role == 'step' else 'cache'
    if (len(inputs), len(outputs)) != want:
        raise CheckpointError(f'{path}: its graph has {len(inputs)} input(s) and {len(outputs)} output(s); its '
                              f'{stream.kind} metadata says {want[0]} and {want[1]} (image, logits, {n} {carried} '
                              'tensor(s)); export the model again')
    fixed = [d for d in inputs[0][1][2:] if isinstance(d, int)]
    _check_tensor(path, 'input', inputs[0], 3, 'float images [1, 3, H, W] of any size', sized=not fixed)
    _check_tensor(path, 'output', outputs[0], stream.num_classes,
                  f'float logits [1, {stream.num_classes}, h, w]: one channel per class its metadata names')
    if role == 'step':
        for tensors in (inputs[1:], outputs[1:]):
            for tensor, (channels, _) in zip(tensors, stream.state_layout):
                _check_tensor(path, 'state', tensor, channels, f'float [1, {channels}, h, w] (its state_layout)')


def _check_tensor(path: Path, what: str, tensor: tuple, channels: int, expected: str, sized: bool = True) -> None:
    """``check_onnx_io`` of one tensor: float32, 4 axes, batch 1 or free, ``channels`` or free."""
    name, shape, is_float = tensor
    fits = lambda d, v: not isinstance(d, int) or d == v   # noqa: E731 - a str or None: a free axis
    if not (is_float and len(shape) == 4 and fits(shape[0], 1) and fits(shape[1], channels) and sized):
        shown = [d if isinstance(d, int) else '?' for d in shape[:8]]
        raise CheckpointError(f'{path}: its {what} {short(name, 40)} is {"float" if is_float else "not float32"} '
                              f'{shown}; the engine uses {expected}')


def check_same_export(main, cur, path: Path, cur_path: Path) -> None:
    """Refuse a key-frame graph and a current-frame graph of two exports: the cache one writes is not the one
    the other reads (same shapes, other weights: wrong masks without an error). Files exported before the
    ``export_id`` was recorded are not compared. A graph whose metadata is no JSON object (corrupt or edited) is
    refused, as `vidseg info` says the engine does; it loaded, the pair not compared."""
    ids = []
    for sess, file in ((main, path), (cur, cur_path)):
        try:
            info = json.loads(sess.get_modelmeta().custom_metadata_map.get(META_KEY, '{}'))
        except (ValueError, RecursionError):
            info = None
        if not isinstance(info, dict):
            raise CheckpointError(f'{file}: its {META_KEY} metadata is no JSON object: not the partner of {path.name}; '
                                  'export the model again')
        ids.append(info.get('export_id'))
    if None not in ids and ids[0] != ids[1]:
        raise CheckpointError(f'{path} and {cur_path.name} come from two exports (an export was interrupted, or one '
                              'file was copied alone); export the model again')


def ort_session(ort, path: Path, providers: list, quiet: bool = False, num_threads: int = 0):
    """An onnxruntime session of ``path``; CheckpointError naming that file (the key-frame graph or its
    ``.current.onnx``) when its bytes are no complete ONNX model, where onnxruntime said 'INVALID_PROTOBUF', or
    onnxruntime cannot load it (an op, opset or IR version it lacks: its reason, ``ort_reason``). ``quiet``:
    without onnxruntime's own log lines on stderr (a session only read, as `vidseg info`'s: one line there).
    ``num_threads``: its intra-op pool (``threads.onnx_options``; 0: onnxruntime's default)."""
    check_onnx_size(path)
    options = onnx_options(ort, num_threads)
    if quiet:
        options.log_severity_level = 4      # fatal only: its errors come back as the exception
    try:
        with text_path(path) as text:
            return ort.InferenceSession(text, options, providers=providers)
    except OSError:     # a name that is not UTF-8 (files.text_path): the CLI's one line, the node's log line
        raise
    except Exception as e:  # onnxruntime's pybind error types: only the message says which
        if 'INVALID_PROTOBUF' in str(e) or 'No graph was found' in str(e):
            raise CheckpointError(f'{path} is not a complete ONNX model (truncated or corrupt); re-copy or re-export '
                                  'it') from e
        raise CheckpointError(f'{path}: cannot load this exported model ({one_line(ort_reason(str(e)), 300)}); '
                              're-export it with `vidseg export`') from e


def check_key_graph(sess, path: Path) -> None:
    """Refuse the current-frame graph of a key-frame pair given as the model: it carries the same metadata as
    its key-frame graph, so it loaded, and then looked for a missing ``X.current.current.onnx``. The key-frame
    graph takes the image alone; the current-frame graph also takes the cache."""
    if len(sess.get_inputs()) > 1:
        key = path.name[:-len('.current.onnx')] + '.onnx' if path.name.endswith('.current.onnx') else 'X.onnx'
        raise CheckpointError(f'{path} is the current-frame half of a key-frame ONNX pair: give {key} as the model '
                              '(it loads both)')


def check_format(path: Path) -> None:
    """CheckpointError naming ``path`` when its bytes are not what its suffix says: a TorchScript file (a zip
    archive, as are checkpoints) renamed ``.onnx``, an ONNX file renamed ``.ts``, or a truncated or corrupt
    ``.ts`` (its zip directory sits at the end). The runtimes said only 'Protobuf parsing failed' or 'failed
    finding central directory. This is an internal miniz error...' (clipped mid-sentence)."""
    kind = sniff_format(path)
    if path.suffix == '.onnx' and kind == 'zip':
        raise CheckpointError(f'{path} is a PyTorch archive (TorchScript or checkpoint), not ONNX: name it '
                              f'{path.stem}.ts or {path.stem}.pt')
    if path.suffix == '.ts' and kind != 'zip':
        hint = (f'; it looks like an ONNX model: name it {path.stem}.onnx' if kind == 'onnx'
                else ': truncated or corrupt; re-copy or re-export it')
        raise CheckpointError(f'{path} is not a (complete) TorchScript archive{hint}')
    code = _has_code(path) if path.suffix == '.ts' else True
    if code is None:    # its end record found, its directory not: torch.jit.load said 'PytorchStreamReader failed
        # reading zip archive: invalid header or archive is corrupted. This is an internal miniz error. If you ...'
        raise CheckpointError(f'{path} is not a (complete) TorchScript archive: truncated or corrupt; re-copy or '
                              're-export it')
    if not code:
        # torch.jit.load said 'PytorchStreamReader failed locating file constants.pkl: file not found. This is an
        # internal miniz error. If you are seeing this error, there is a high likelihood that your ...'
        raise CheckpointError(f'{path} is a torch checkpoint (torch.save), not a TorchScript export: name it '
                              f'{path.stem}.pt (the suffix says how a model file is loaded)')


def _has_code(path: Path) -> bool | None:
    """Whether a zip archive holds TorchScript code (``<archive>/code/`` or ``constants.pkl``), which a
    checkpoint written by torch.save does not; None where its directory cannot be read (corrupt); True where
    the file cannot be read (the loader says why)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any('/code/' in n or n.endswith('/constants.pkl') for n in z.namelist())
    except (zipfile.BadZipFile, ValueError, EOFError):
        return None
    except OSError:     # not readable now: the loader says why
        return True


def sniff_format(path: Path) -> str:
    """'zip' (TorchScript, checkpoint; complete: its directory at the end is found), 'onnx' (starts as every ONNX
    ModelProto does: field 1 ir_version, tag 0x08), or '' for anything else."""
    if zipfile.is_zipfile(path):
        return 'zip'
    with open(path, 'rb') as f:
        return 'onnx' if f.read(1) == b'\x08' else ''


def ort_reason(text: str) -> str:
    """onnxruntime's error without its code, 'Load model from X failed:', C++ source location and function
    signature, which filled the 300 characters shown before the reason ('Unsupported model IR version: 99')."""
    text = re.sub(r'^\[ONNXRuntimeError\] : \d+ : \w+ : ', '', text.strip())
    if text.startswith('Load model from ') and ' failed:' in text:
        text = text.split(' failed:', 1)[1]
    text = re.sub(r'/onnxruntime_src/\S+:\d+ ', '', text)
    if '::' in text.split('(', 1)[0]:   # 'void onnxruntime::f(const std::string&, ...) <the reason>'
        depth = 0
        for i, c in enumerate(text):
            depth += (c == '(') - (c == ')')
            if c == ')' and depth == 0:
                text = text[i + 1:]
                break
    return ' '.join(text.split())
