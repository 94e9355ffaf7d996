"""CUDA graphs for the model steps: one kernel launch per frame instead of hundreds.

A ``CudaGraphed`` callable captures its function once per input signature (shapes, dtypes, strides),
after a few warm-up calls on a side stream (cuDNN autotuning and allocations happen there, outside the
graph), and then replays it: inputs are copied into the graph's static tensors and outputs are cloned
out, so a key frame's cache or a recurrent state outlives the next replay and streams sharing one
runner never see each other's tensors. A new input size (camera change, edge tiles) captures a new
graph; beyond ``max_graphs`` the least recently used one is dropped.

A signature that comes back after its graph was dropped runs eagerly from then on: more sizes in
turn than ``max_graphs`` (several cameras, tiles) would otherwise evict and capture again on every
frame, each capture costing warm-up runs and a new memory pool, far more than the launches saved.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import torch

log = logging.getLogger(__name__)


class CudaGraphed:
    """``fn(*tensors) -> tensor or tuple of tensors`` replayed from CUDA graphs (CUDA tensors only)."""

    def __init__(self, fn, warmup: int = 3, max_graphs: int = 4):
        self.fn, self.warmup, self.max_graphs = fn, warmup, max_graphs
        self.graphs: OrderedDict = OrderedDict()
        self.dropped: set = set()      # signatures whose graph was evicted: eager from then on
        self.captures = 0

    def __call__(self, *args: torch.Tensor):
        key = tuple((tuple(a.shape), a.dtype, a.stride()) for a in args)
        entry = self.graphs.get(key)
        if entry is None:
            if key in self.dropped:
                return self.fn(*args)
            while len(self.graphs) >= self.max_graphs:
                old, _ = self.graphs.popitem(last=False)
                self.dropped.add(old)
                if len(self.dropped) == 1:
                    log.warning('more than %d input sizes take turns: sizes whose CUDA graph is dropped '
                                'run without one from now on', self.max_graphs)
            entry = self.graphs[key] = self._capture(args)
        else:
            self.graphs.move_to_end(key)
        static_in, graph, static_out, single = entry
        for s, a in zip(static_in, args):
            s.copy_(a)
        graph.replay()
        out = tuple(o.clone() for o in static_out)
        return out[0] if single else out

    def _capture(self, args):
        static_in = [a.clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*static_in)
        self.captures += 1
        single = isinstance(out, torch.Tensor)
        return static_in, graph, (out,) if single else tuple(out), single
