"""segment_node ends its process itself once the node is destroyed and the ROS context shut down (spin.end_now):
Python's finalization of torch's modules took 2-11 s after the node had said its last word (bench/bench_segment_exit).
What finalization did that matters still happens: atexit handlers run, what was printed comes out, the status is 0."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('rclpy')
from support.paths import ROOT  # noqa: E402

NODE = textwrap.dedent('''
    import atexit, sys
    from pathlib import Path
    atexit.register(lambda: Path(sys.argv[1]).write_text('atexit ran'))
    print('printed before the node, left unflushed in a pipe', end='')
    from vidseg_ros.ros import segment_node
    sys.exit(segment_node.main(['node', '--ros-args', '-p', 'model:=untrained:keyframe_fpn', '-p', 'input_hw:=[64,96]']))
''')


def test_a_stopped_segment_node_runs_atexit_handlers_and_flushes_its_output(tmp_path):
    marker = tmp_path / 'marker'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    env.pop('PYTHONUNBUFFERED', None)
    proc = subprocess.Popen([sys.executable, '-c', NODE, str(marker)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=str(ROOT))
    try:
        # the node serves: its log says so (stderr, rcutils' console output)
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if 'serving camera(s)' in line:
                break
        assert any('serving camera(s)' in ln for ln in lines), ''.join(lines)[-3000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert out == 'printed before the node, left unflushed in a pipe'
    assert marker.read_text() == 'atexit ran'
    assert 'Traceback' not in err, err[-3000:]
