"""bench/bench_node_overhead.py runs end to end (real nodes in three processes, a short run), so the
benchmark that issue 15's targets are read from never rots."""
import subprocess
import sys

from support.paths import ROOT


def test_bench_node_overhead_short_run():
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'bench_node_overhead.py'), '--seconds', '3',
                           '--rate', '10'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert 'load average (1 min' in out
    frames = next(line for line in out.splitlines() if line.startswith('frames:'))
    assert int(frames.split()[3]) > 0, frames   # "frames: N in, M segmented, ..."
    rows = {line.split('|')[1].strip(): line for line in out.splitlines() if line.startswith('| ')}
    assert {'transport', 'preprocess', 'model', 'postprocess', 'publish', 'end_to_end', 'overhead'} <= set(rows)
    assert 'model share of end-to-end p50 (outputs: mask)' in out
    assert '  ceiling: with convert, preprocess, postprocess, wait and other at 0 the share would be ' in out
    assert 'the model ran at torch_threads ' in out, out    # what /diagnostics says, not only what was asked
    # the frames it measured on are named: noise has almost no label boundaries and flatters post-processing
    header = out.splitlines()[0]
    assert 'camera frames: ' in header and 'NOISE' not in header, header
