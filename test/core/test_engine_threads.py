"""num_threads: the engine's torch intra-op thread count and OpenCV's pool (ONNX sessions: test_engine_threads_onnx).
torch.set_num_threads and cv2.setNumThreads are process-wide (torch's also per OpenMP thread), so each case runs
in a fresh interpreter."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vidseg_ros.config import ConfigError, from_dict
from vidseg_ros.engine.base import EngineConfig, checked

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import cv2
import numpy as np
import torch
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from support.threads import in_thread
DEFAULT = torch.get_num_threads()
N = DEFAULT + 1                  # differs from torch's default on any machine (more threads than cores is allowed)
FRAME = np.zeros((64, 96, 3), np.uint8)

def cfg(**kw):
    return EngineConfig(model='untrained:keyframe_fpn', device='cpu', input_hw=[64, 96], **kw)

def step_and_count(engine):
    engine.step(FRAME)
    return torch.get_num_threads()
"""


def run(body: str) -> None:
    """``body`` after PRELUDE in a fresh interpreter; its assertions fail the test with their output."""
    code = PRELUDE + textwrap.dedent(body)
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__('os').environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), str(ROOT / 'test')])})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_num_threads_reaches_torch_when_the_engine_is_built():
    run("""
        engine = StreamSegmenter.from_checkpoint(cfg(num_threads=N))
        assert torch.get_num_threads() == N, (torch.get_num_threads(), N)
    """)


def test_num_threads_reaches_the_thread_that_runs_the_model():
    """The node builds the engine in one thread and steps it in its worker; a run-time change reaches a worker
    that has already run the model (with OpenMP a count set in another thread does not)."""
    run("""
        engine = StreamSegmenter.from_checkpoint(cfg())
        assert in_thread(lambda: step_and_count(engine)) == DEFAULT
        engine = StreamSegmenter.from_checkpoint(cfg(num_threads=N))
        assert in_thread(lambda: step_and_count(engine)) == N

        def worker():   # runs a frame, takes a changed value between frames, runs the next
            seen = [step_and_count(engine)]
            engine.update_config(cfg(num_threads=1))
            seen.append(step_and_count(engine))
            engine.update_config(cfg(num_threads=0))    # back to torch's own count
            seen.append(step_and_count(engine))
            return seen
        assert in_thread(worker) == [N, 1, DEFAULT], in_thread(worker)
    """)


def test_num_threads_0_leaves_a_count_set_by_the_user():
    run("""
        torch.set_num_threads(N)
        engine = StreamSegmenter.from_checkpoint(cfg(num_threads=0))
        assert step_and_count(engine) == N
    """)


def test_num_threads_reaches_opencvs_pool():
    """OpenCV resizes, upsamples and renders every CPU frame on its own pool (one thread per core): it ran there
    at any num_threads. Set where the model runs (process-wide); 0 gives OpenCV its own count back."""
    run("""
        CV = cv2.getNumThreads()
        engine = StreamSegmenter.from_checkpoint(cfg(num_threads=1))
        assert cv2.getNumThreads() == 1

        def worker():
            seen = [engine.step(FRAME) and cv2.getNumThreads()]
            engine.update_config(cfg(num_threads=N))
            seen.append(engine.step(FRAME) and cv2.getNumThreads())
            engine.update_config(cfg(num_threads=0))
            seen.append(engine.step(FRAME) and cv2.getNumThreads())
            return seen
        assert in_thread(worker) == [1, N, CV], (in_thread(worker), CV)
    """)


def test_the_engine_reports_the_torch_count_the_model_ran_at():
    """What /diagnostics says (torch_threads, as `vidseg bench`): the count of the thread that ran the last frame."""
    run("""
        engine = StreamSegmenter.from_checkpoint(cfg(num_threads=N))

        def worker():
            engine.step(FRAME)
            seen = [engine.threads]
            engine.update_config(cfg(num_threads=1))
            engine.step(FRAME)
            return seen + [engine.threads]
        assert in_thread(worker) == [{'torch_threads': N}, {'torch_threads': 1}]
    """)


@pytest.mark.parametrize('value, message', [
    (-1, 'num_threads: -1 is out of range 0..256'),
    (257, 'num_threads: 257 is out of range 0..256'),
    ('two', "num_threads: expected int, got str 'two'"),
    (1.5, 'num_threads: expected int, got float 1.5'),
    (True, 'num_threads: expected an integer, got True'),
])
def test_nonsense_num_threads_is_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(EngineConfig, {'num_threads': value})
    if isinstance(value, int) and not isinstance(value, bool):
        with pytest.raises(ConfigError, match=message):
            checked(EngineConfig(num_threads=value))
