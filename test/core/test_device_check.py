"""bench/device_check.py runs end to end on CPU (--quick), so the GPU measurement script never rots.

Run as its docstring says (repository root, ``PYTHONPATH=.``), so the source tree is tested, not an
installed copy that may be older."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SOURCE_TREE = dict(cwd=ROOT, env={**os.environ, 'PYTHONPATH': '.'})


def test_device_check_quick_on_cpu(tmp_path):
    out = tmp_path / 'dc.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'device_check.py'), '--device', 'cpu', '--quick',
                           '--json', str(out)], capture_output=True, text=True, timeout=600, **SOURCE_TREE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith('|')]
    assert 'amort. k=5 ms' in table[0] and 'train img/s' in table[0]
    rows = json.loads(out.read_text())['rows']
    whats = [r['what'] for r in rows]
    engine = next(r for r in rows if r['what'].startswith('engine'))
    assert engine['key_ms'] > 0 and engine['current_ms'] > 0 and engine['frame_path_ms'] > 0
    assert engine['amortised_k5_ms'] == (engine['key_ms'] + 4 * engine['current_ms']) / 5
    assert any(w.startswith('recurrent step') for w in whats) and any(w.startswith('per-frame twin') for w in whats)
    modes = {r['what'].split('(')[1].split(',')[0] for r in rows if r['what'].startswith('train')}
    assert modes == {'perframe', 'keyframe', 'sequence'}
    assert all(r['images_per_s'] > 0 for r in rows if r['what'].startswith('train'))
    memory = next(r for r in rows if r['what'].startswith('memory'))
    assert memory['memory_late_mb'] > 0 and memory['peak_mb'] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message shown where CUDA is missing')
def test_device_check_refuses_cuda_without_cuda(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'device_check.py'), '--device', 'cuda',
                           '--json', str(tmp_path / 'x.json')], capture_output=True, text=True, timeout=120,
                          **SOURCE_TREE)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'CUDA is not available' in proc.stderr


def test_device_check_parts_runs_only_the_parts_asked_for(tmp_path):
    out = tmp_path / 'dc.json'
    cmd = [sys.executable, str(ROOT / 'bench' / 'device_check.py'), '--device', 'cpu', '--quick', '--json', str(out)]
    proc = subprocess.run(cmd + ['--parts', 'memory'], capture_output=True, text=True, timeout=300, **SOURCE_TREE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r['what'].split()[0] for r in json.loads(out.read_text())['rows']] == ['memory']
    proc = subprocess.run(cmd + ['--parts', 'memory,gpu'], capture_output=True, text=True, timeout=120, **SOURCE_TREE)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'unknown --parts gpu' in proc.stderr
