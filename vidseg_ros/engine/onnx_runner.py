"""``.onnx`` exports run by onnxruntime: the key-frame pair (``X.onnx`` and ``X.current.onnx``) or one graph,
on TensorRT, CUDA or CPU (``devices.onnx_providers``), the intra-op pool at the engine's ``num_threads``."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vidseg_ros.engine.devices import check_onnx_device, onnx_providers
from vidseg_ros.engine.exported_checks import (META_KEY, check_key_graph, check_onnx_io, check_same_export,
                                               exported_meta_info, onnx_weights, ort_session, session_io)
from vidseg_ros.engine.runner import Runner, zero_state
from vidseg_ros.engine.threads import onnx_threads
from vidseg_ros.models.model_file_checks import CheckpointError, check_finite
from vidseg_ros.text import one_line

log = logging.getLogger(__name__)


def current_path(path: str | Path) -> Path:
    """The ONNX current-frame graph that sits beside a key-frame model's ``X.onnx``."""
    path = Path(path)
    return path.with_name(path.stem + '.current.onnx')


def _identity(sess) -> tuple:
    """What tells one export's graph from another's: its metadata (with the export id) and its inputs/outputs."""
    return sess.get_modelmeta().custom_metadata_map, session_io(sess)


class OnnxRunner(Runner):
    """``.onnx`` export(s) on onnxruntime: TensorRT, CUDA or CPU provider (``onnx_providers``); the device is
    checked by ``check_onnx_device`` (cuda without onnxruntime's CUDA provider is an error, as for torch).
    ``num_threads``: the sessions' intra-op threads (``threads.onnx_options``; 0: onnxruntime's default)."""

    backend = 'onnx'

    def __init__(self, path: str | Path, device: str = 'auto', precision: str = 'fp32',
                 channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False,
                 num_threads: int = 0):
        import onnxruntime as ort  # optional at import time of the package
        path = Path(path)
        check_onnx_device(device, ort.get_available_providers())   # also here: the runner may be built directly
        providers = onnx_providers(device, precision, ort.get_available_providers(), path.parent)
        if precision != 'fp32' and not any(p[0] == 'TensorrtExecutionProvider' for p in providers
                                           if isinstance(p, tuple)):
            log.warning('precision %s ignored for ONNX models without TensorRT (exported in fp32)', precision)
        self.device = torch.device('cpu')
        self.path, self._providers, self._num_threads = path, providers, num_threads
        weights = onnx_weights(path)    # first: where its weights' data lie is checked before onnxruntime reads it
        self._main = ort_session(ort, path, providers, num_threads=num_threads)
        self.providers = self._main.get_providers()
        self.meta, self.info = exported_meta_info(
            self._main.get_modelmeta().custom_metadata_map.get(META_KEY, '{}'), path)
        check_finite(weights, str(path))    # exported before export refused such weights
        del weights
        self._cur = None
        if self.kind == 'keyframe':
            check_key_graph(self._main, path)
        check_onnx_io(path, self.info, 'key' if self.kind == 'keyframe' else 'step', *session_io(self._main))
        if self.kind == 'keyframe':
            cur = current_path(path)
            if not cur.is_file():
                raise CheckpointError(f'{path}: its key-frame pair {cur.name} is not beside it (move and rename '
                                      'X.onnx and X.current.onnx together)')
            weights = onnx_weights(cur)
            self._cur = ort_session(ort, cur, providers, num_threads=num_threads)
            check_same_export(self._main, self._cur, path, cur)
            check_finite(weights, str(cur))
            check_onnx_io(cur, self.info, 'current', *session_io(self._cur))

    @property
    def threads(self) -> int:
        """The intra-op thread count the model runs at (its sessions': ``threads.onnx_threads``)."""
        return onnx_threads(self._main)

    def set_threads(self, num_threads: int) -> None:
        """The sessions rebuilt at ``num_threads`` (onnxruntime fixes the count when a session is made). The engine
        calls it before a frame, in the thread that runs the model: no frame runs on a session being replaced.
        The temporal state (key-frame cache, recurrent state) is the engine's tensors, not the sessions': it is
        kept, and the next frame goes on from it (a model reload would start from a key frame). The file is read
        again; where it is no longer the export loaded (replaced, removed, unreadable) the sessions stay as they
        are, at their count, with one warning, and the model is served on."""
        if num_threads == self._num_threads:
            return
        self._num_threads = num_threads     # tried once per change, not again every frame
        import onnxruntime as ort
        try:
            main = ort_session(ort, self.path, self._providers, num_threads=num_threads)
            cur = None if self._cur is None else ort_session(ort, current_path(self.path), self._providers,
                                                             num_threads=num_threads)
            if _identity(main) != _identity(self._main) or (cur is not None and _identity(cur) != _identity(self._cur)):
                raise CheckpointError(f'{self.path} is not the export loaded any more')
        except (CheckpointError, OSError) as e:
            log.warning('num_threads %d not applied to the ONNX model: %s; it runs on at %d threads (reload the '
                        'model to take the file as it is now)', num_threads, one_line(str(e), 300), self.threads)
            return
        self._main, self._cur = main, cur

    @staticmethod
    def _run(sess, *arrays: torch.Tensor) -> list[np.ndarray]:
        names = [i.name for i in sess.get_inputs()]
        feeds = {n: a.detach().float().cpu().numpy() for n, a in zip(names, arrays)}
        return sess.run(None, feeds)

    @torch.inference_mode()
    def key(self, x):
        out = [torch.from_numpy(a) for a in self._run(self._main, x)]
        return out[0], tuple(out[1:])

    @torch.inference_mode()
    def current(self, x, cache):
        return torch.from_numpy(self._run(self._cur, x, *cache)[0])

    @torch.inference_mode()
    def step(self, x, state):
        out = [torch.from_numpy(a) for a in self._run(self._main, x, *state)]
        return out[0], tuple(out[1:])

    def init_state(self, x):
        return zero_state(self.info.state_layout, x, 'cpu', torch.float32)
