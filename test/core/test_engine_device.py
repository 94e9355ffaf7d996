"""The GPU frame path through the same code on CPU: device-side pre/post-processing and rendering,
CUDA-graph and ONNX provider selection (the CUDA-only parts run where CUDA is present)."""
import numpy as np
import pytest
import torch

from vidseg_ros.engine.devices import onnx_providers
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.outputs import ClassTable, Renderer
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta

MS = 1_000_000
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def engine(arch='keyframe_fpn', **cfg):
    torch.manual_seed(0)
    kw = {'width_mult': 0.25} if arch != 'recurrent_unet' else {'size': 'small_shallow'}
    model = create_model(arch, **kw)
    if arch == 'recurrent_fpn':   # its cell starts as the identity: give it weights, so its state counts
        torch.nn.init.normal_(model.cell.out.weight, std=0.3)
    cfg.setdefault('input_hw', [64, 96])
    cfg.setdefault('device', 'cpu')
    return StreamSegmenter(model, default_meta(arch, model.arch_config, input_hw=(64, 96)), EngineConfig(**cfg))


def smooth_frames(n, hw=(90, 120)):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    base = np.stack([128 + 100 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)], -1)
    return [np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.mark.parametrize('arch', ['keyframe_fpn', 'recurrent_unet', 'recurrent_fpn'])
def test_device_path_on_cpu_matches_the_cpu_path(arch):
    host, dev = engine(arch), engine(arch)
    dev._on_device = True      # what a GPU engine does, run on CPU tensors
    table = ClassTable.build(host.classes, host.palette, ignore=[1])
    render = Renderer(table)
    for i, img in enumerate(smooth_frames(3)):
        a = host.step(img, i * 33 * MS, want_confidence=True, confidence_u8=True, class_prob=2)
        b = dev.step(img, i * 33 * MS, want_confidence=True, confidence_u8=True, class_prob=2)
        assert a.device_frame is None and b.device_frame is not None and b.is_key == a.is_key
        assert b.class_ids.dtype == np.uint8 and b.confidence.dtype == np.uint8
        assert b.class_ids.shape == a.class_ids.shape == img.shape[:2]
        # the resize kernels differ (antialiased bilinear vs INTER_AREA), so near-equal, not equal
        assert (a.class_ids == b.class_ids).mean() > 0.97
        assert np.abs(a.confidence.astype(int) - b.confidence).mean() < 8
        assert np.abs(a.class_prob - b.class_prob).mean() < 0.03
        want = {'mask', 'color', 'overlay'}
        imgs = render.render(b, img, 0.5, want)   # rendered from the tensors the engine kept
        host_imgs = render.render(type('R', (), {'class_ids': b.class_ids, 'device_frame': None}), img, 0.5, want)
        np.testing.assert_array_equal(imgs['mask'], host_imgs['mask'])
        np.testing.assert_array_equal(imgs['color'], host_imgs['color'])
        assert np.abs(imgs['overlay'].astype(int) - host_imgs['overlay']).max() <= 1


def test_cuda_graphs_setting_is_ignored_off_cuda_and_needs_a_new_engine():
    a, b = engine(), engine(cuda_graphs=True)
    assert b._runner._graphed is False
    img = smooth_frames(1)[0]
    np.testing.assert_array_equal(a.step(img).class_ids, b.step(img).class_ids)
    with pytest.raises(ValueError, match='cuda_graphs'):
        a.update_config(EngineConfig(device='cpu', input_hw=[64, 96], cuda_graphs=True))


def test_onnx_providers_pick_tensorrt_then_cuda_then_cpu(tmp_path):
    cpu = ['CPUExecutionProvider']
    gpu = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    assert onnx_providers('cpu', 'fp32', gpu, tmp_path) == cpu
    assert onnx_providers('auto', 'fp32', cpu, tmp_path) == cpu
    assert onnx_providers('cuda', 'fp32', cpu, tmp_path) == cpu
    got = onnx_providers('cuda:1', 'fp16', gpu, tmp_path)
    assert [p[0] if isinstance(p, tuple) else p for p in got] == gpu
    assert got[0][1]['trt_fp16_enable'] is True and got[0][1]['device_id'] == 1
    assert got[0][1]['trt_engine_cache_path'] == str(tmp_path)
    assert [p[0] for p in onnx_providers('auto', 'fp32', gpu[1:], tmp_path)[:1]] == ['CUDAExecutionProvider']


@cuda
@pytest.mark.parametrize('arch', ['keyframe_fpn', 'recurrent_unet', 'recurrent_fpn'])
def test_cuda_graphs_replay_equals_eager(arch):
    eager = engine(arch, device='cuda')
    graphed = engine(arch, device='cuda', cuda_graphs=True)
    assert graphed._runner._graphed
    for i, img in enumerate(smooth_frames(6) + smooth_frames(2, hw=(70, 100))):  # a size change re-captures
        a = eager.step(img, i * 33 * MS, want_confidence=True)
        b = graphed.step(img, i * 33 * MS, want_confidence=True)
        assert (a.class_ids == b.class_ids).mean() > 0.999
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)


@cuda
def test_cuda_engine_downloads_only_uint8_and_keeps_the_frame_on_the_device():
    eng = engine(device='cuda', precision='fp16', channels_last=True)
    r = eng.step(smooth_frames(1)[0], want_confidence=True, confidence_u8=True)
    assert r.class_ids.dtype == np.uint8 and r.confidence.dtype == np.uint8
    ids, frame = r.device_frame
    assert ids.is_cuda and frame.is_cuda and frame.dtype == torch.uint8



def test_cuda_graphed_bookkeeping_with_a_stand_in_graph(monkeypatch):
    """The replay logic (static inputs, cloned outputs, one graph per input size, oldest dropped) with a
    stand-in for torch.cuda's graph API that reruns the function on replay; the real one needs CUDA."""
    import contextlib

    from vidseg_ros.engine import graphs

    class FakeGraph:
        def replay(self):
            out = self.fn(*self.inputs)
            for o, n in zip(self.outputs, out if isinstance(out, tuple) else (out,)):
                o.copy_(n)

    calls = []

    def fn(x, y):
        calls.append(x.shape)
        return x * 2, y + 1

    fake_cuda = type('C', (), {'Stream': lambda: type('S', (), {'wait_stream': lambda self, s: None})(),
                               'current_stream': lambda: type('S', (), {'wait_stream': lambda self, s: None})(),
                               'stream': lambda s: contextlib.nullcontext(), 'CUDAGraph': FakeGraph,
                               'graph': lambda g: contextlib.nullcontext()})
    monkeypatch.setattr(graphs.torch, 'cuda', fake_cuda)
    real_capture = graphs.CudaGraphed._capture

    def capture(self, args):
        static_in, graph, static_out, single = real_capture(self, args)
        graph.fn, graph.inputs, graph.outputs = self.fn, static_in, static_out
        return static_in, graph, static_out, single
    monkeypatch.setattr(graphs.CudaGraphed, '_capture', capture)
    g = graphs.CudaGraphed(fn, warmup=2, max_graphs=2)
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    out1 = g(a, b)
    out2 = g(a * 3, b)
    assert torch.equal(out2[0], a * 6) and torch.equal(out1[0], a * 2)   # outputs are copies, not the graph's
    assert g.captures == 1 and len(calls) == 2 + 1 + 2                   # warm-up, capture, two replays
    g(torch.ones(4, 3), torch.ones(4, 3))                                  # a new size: a new graph
    g(a, b)                                                                # used: now the most recent
    g(torch.ones(5, 3), torch.ones(5, 3))
    assert g.captures == 3 and len(g.graphs) == 2                          # least recently used dropped
    assert set(k[0][0] for k in g.graphs) == {(2, 3), (5, 3)}
    n = len(calls)
    assert torch.equal(g(torch.ones(4, 3), b[:1].expand(4, 3).contiguous())[0], torch.full((4, 3), 2.0))
    assert g.captures == 3 and len(calls) == n + 1                         # came back: eager, no capture


def test_cuda_graphed_sizes_taking_turns_are_not_captured_on_every_call(monkeypatch):
    """Five cameras of different sizes in turn through one runner (four graphs at most): the sizes whose
    graph was dropped run eagerly, so captures stop after the first round instead of one per frame."""
    from vidseg_ros.engine import graphs
    captured = []

    def capture(self, args):
        captured.append(args[0].shape)
        self.captures += 1

        class Replay:
            def replay(self_):
                pass
        static = [a.clone() for a in args]
        return static, Replay(), (self.fn(*static),), True
    monkeypatch.setattr(graphs.CudaGraphed, '_capture', capture)
    g = graphs.CudaGraphed(lambda x: x + 1, max_graphs=4)
    sizes = [(1, 3, 8 * (i + 1), 8) for i in range(5)]
    for _ in range(20):
        for s in sizes:
            x = torch.rand(s)
            out = g(x)
            assert out.shape == x.shape
    assert g.captures == 5 and len(g.graphs) == 4 and len(g.dropped) == 1


@pytest.mark.parametrize('path', ['fill_cpu', 'fill'])
def test_padding_stays_zero_when_a_smaller_frame_reuses_the_buffer(path):
    """A 30x30 frame after a 32x32 one pads to the same 32x32 input: the old pixels must not remain."""
    from vidseg_ros.engine.frame_ops import InputBuffer
    buf = InputBuffer(torch.device('cpu'), [0.0] * 3, [1.0] * 3)
    for hw in ((32, 32), (30, 30)):
        frame = np.full((*hw, 3), 255, np.uint8)
        arg = frame if path == 'fill_cpu' else torch.from_numpy(frame)
        x = getattr(buf, path)(arg, hw, (32, 32))
    assert float(x[..., 30:, :].abs().max()) == 0.0 and float(x[..., :, 30:].abs().max()) == 0.0
    assert float(x[..., :30, :30].min()) == 1.0


def test_stage_clock_times_each_stage_between_marks(monkeypatch):
    from vidseg_ros.engine import stage_clock
    now = iter([1.0, 1.002, 1.0105, 1.011])
    monkeypatch.setattr(stage_clock.time, 'perf_counter', lambda: next(now))
    clock = stage_clock.StageClock(torch.device('cpu'))
    clock.start()
    for _ in range(3):
        clock.mark()
    got = clock.stages(('a', 'b', 'c'))
    assert got == pytest.approx({'a': 2.0, 'b': 8.5, 'c': 0.5})
    with pytest.raises(ValueError, match='2 stage names for 3'):
        clock.stages(('a', 'b'))


@cuda
def test_a_cuda_frame_is_timed_without_synchronising_each_stage(monkeypatch):
    eng = engine(device='cuda')
    eng.step(smooth_frames(1)[0])     # warm-up: allocations and kernel selection may synchronise
    calls = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a, **k: (calls.append(a), real(*a, **k)))
    r = eng.step(smooth_frames(1)[0], want_confidence=True, confidence_u8=True)
    assert calls == []
    assert set(r.timings_ms) == {'preprocess', 'model', 'postprocess'}
    assert all(v >= 0 for v in r.timings_ms.values()) and r.timings_ms['model'] > 0
