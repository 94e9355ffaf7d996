"""num_threads reaches onnxruntime: an ONNX model's sessions run their intra-op pool at it (they ran at
onnxruntime's default, one thread per core, spinning, whatever the setting), a run-time change rebuilds them at
the next frame with the temporal state kept, and the engine reports the count (``threads``, /diagnostics)."""
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.threads import in_thread

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.engine.threads import SPIN_KEY, onnx_default_threads
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.tools.export import export_onnx

ort = pytest.importorskip('onnxruntime')
ROOT = Path(__file__).resolve().parents[2]
HW = [64, 96]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', width_mult=0.25)
    ckpt = tmp_path_factory.mktemp('onnx_threads') / 'kf.pt'
    save_checkpoint(ckpt, model, default_meta('keyframe_fpn', model.arch_config, input_hw=HW,
                                              provenance={'trained': True}))
    return ckpt


@pytest.fixture(scope='module')
def onnx_model(checkpoint):
    export_onnx(checkpoint, checkpoint.with_suffix('.onnx'))
    return checkpoint.with_suffix('.onnx')


@pytest.fixture(autouse=True)
def _process_counts():
    """torch's and OpenCV's counts are process-wide: each test leaves them as it found them."""
    counts = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(counts[0])
    cv2.setNumThreads(counts[1])


def cfg(model, **kw):
    return EngineConfig(model=str(model), device='cpu', input_hw=HW, keyframe_interval=5, **kw)


def sessions(engine):
    runner = engine._runner
    return [s for s in (runner._main, runner._cur) if s is not None]


def frames(n):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(n)]


def test_num_threads_reaches_the_onnx_sessions(onnx_model):
    engine = StreamSegmenter.from_checkpoint(cfg(onnx_model, num_threads=1))
    assert len(sessions(engine)) == 2      # the key-frame graph and the current-frame graph
    for sess in sessions(engine):
        options = sess.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
        assert options.get_session_config_entry(SPIN_KEY) == '0'    # idle threads sleep: cores are shared
    assert engine.threads == {'onnx_threads': 1}
    default = StreamSegmenter.from_checkpoint(cfg(onnx_model))
    assert sessions(default)[0].get_session_options().intra_op_num_threads == 0    # onnxruntime's own
    assert default.threads == {'onnx_threads': onnx_default_threads()}


def test_a_run_time_change_rebuilds_the_sessions_and_keeps_the_key_frame_cache(onnx_model):
    """The change is taken before the next frame, in the thread that runs the model; that frame is still a
    current frame on the cached key-frame features, the same masks as an engine that never changed."""
    clip = frames(4)
    reference = StreamSegmenter.from_checkpoint(cfg(onnx_model, num_threads=2))
    want = [reference.step(f, i * 33_000_000, want_confidence=True) for i, f in enumerate(clip)]
    engine = StreamSegmenter.from_checkpoint(cfg(onnx_model, num_threads=1))
    before = sessions(engine)

    def worker():
        got = [engine.step(f, i * 33_000_000, want_confidence=True) for i, f in enumerate(clip[:2])]
        engine.update_config(cfg(onnx_model, num_threads=2))
        got += [engine.step(f, (i + 2) * 33_000_000, want_confidence=True) for i, f in enumerate(clip[2:])]
        return got
    got = in_thread(worker)
    assert [r.is_key for r in got] == [True, False, False, False]
    assert [r.reset_reason for r in got[1:]] == ['', '', '']
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
        np.testing.assert_allclose(g.confidence, w.confidence, atol=1e-5)
    after = sessions(engine)
    assert all(a is not b for a, b in zip(after, before))
    assert [s.get_session_options().intra_op_num_threads for s in after] == [2, 2]
    assert engine.threads == {'onnx_threads': 2}

    engine.update_config(cfg(onnx_model, num_threads=0))   # back to onnxruntime's default
    assert not engine.step(clip[0], 4 * 33_000_000).is_key
    assert [s.get_session_options().intra_op_num_threads for s in sessions(engine)] == [0, 0]
    for sess in sessions(engine):
        with pytest.raises(RuntimeError, match='does not have configuration'):    # onnxruntime's default
            sess.get_session_options().get_session_config_entry(SPIN_KEY)
    assert engine.threads == {'onnx_threads': onnx_default_threads()}


def test_a_file_replaced_since_load_keeps_the_sessions_it_has(onnx_model, checkpoint, tmp_path, caplog):
    """A rebuild reads the file again: another export there now (its cache would not fit the sessions' weights)
    is not taken; the model is served on at its count, with one warning."""
    path = tmp_path / 'kf.onnx'
    for src in (onnx_model, onnx_model.with_name('kf.current.onnx')):
        shutil.copy(src, tmp_path / src.name)
    engine = StreamSegmenter.from_checkpoint(cfg(path, num_threads=1))
    engine.step(frames(1)[0], 0)
    export_onnx(checkpoint, tmp_path / 'kf.onnx')     # the same weights, another export
    engine.update_config(cfg(path, num_threads=2))
    with caplog.at_level(logging.WARNING, logger='vidseg_ros.engine.onnx_runner'):
        results = [engine.step(f, (i + 1) * 33_000_000) for i, f in enumerate(frames(3))]
    assert [r.is_key for r in results] == [False, False, False]
    warnings = [r.getMessage() for r in caplog.records if 'num_threads 2 not applied' in r.getMessage()]
    assert len(warnings) == 1 and 'not the export loaded' in warnings[0], caplog.text
    assert engine.threads == {'onnx_threads': 1}


def test_the_reported_count_is_the_threads_onnxruntime_makes(onnx_model):
    """Counted: a session makes its count less one threads (the caller runs too); for 0 the count reported
    (onnxruntime's default) is what it makes. A fresh interpreter: no other thread comes or goes meanwhile."""
    code = textwrap.dedent(f"""
        import os
        import onnxruntime as ort
        from vidseg_ros.engine.exported_checks import ort_session
        from vidseg_ros.engine.threads import onnx_default_threads, onnx_threads
        from pathlib import Path
        tasks = lambda: len(os.listdir('/proc/self/task'))
        for n in (0, 1, 3):
            before = tasks()
            sess = ort_session(ort, Path({str(onnx_model)!r}), ['CPUExecutionProvider'], num_threads=n)
            made = tasks() - before
            assert made == onnx_threads(sess) - 1, (n, made, onnx_threads(sess))
            assert onnx_threads(sess) == (n or onnx_default_threads())
            del sess
    """)
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_bench_reports_the_onnx_sessions_count(onnx_model):
    """`vidseg bench` of an .onnx model said no thread count at all (only torch's, and only for torch models)."""
    from vidseg_ros.tools.commands_models import bench
    out = bench(str(onnx_model), frames=1, device='cpu', num_threads=1)
    assert out['onnx_threads'] == 1 and 'torch_threads' not in out, out
