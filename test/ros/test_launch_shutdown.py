"""Ctrl-C without a terminal: `ros2 launch` started by a script, CI or a service manager (no tty) and
stopped with SIGINT to its process group. Launch then signals its children a second time (it assumes
only it got the first), so each node must also survive a second SIGINT while it cleans up."""
from __future__ import annotations

from support.launch_helpers import Launch, error_lines, real_clip, require_launch

require_launch()


def test_group_sigint_without_a_tty_ends_every_node_cleanly(tmp_path):
    launch = Launch('segment.launch.py', {'video': real_clip(), 'record': 'true', 'output_dir': tmp_path / 'bags'},
                    tmp_path / 'launch.log', tty=False)
    try:
        launch.wait_for_output('serving camera', 180)
    finally:
        rc = launch.interrupt()
    log = launch.log()
    assert launch.left_behind == [] and 'escalating to' not in log, log[-4000:]
    errors = error_lines(log)
    # Per node, so that a failure names who printed it (segment_node: #11, recorder_node: #12).
    for node in ('launch', 'video_source_node', 'segment_node', 'recorder_node'):
        assert not errors.get(node), f'{node} on a second SIGINT:\n' + '\n'.join(errors[node]) + '\n' + log[-4000:]
    assert rc == 0


def test_a_failed_video_source_ends_the_launch(tmp_path):
    """`video:=/nonexistent.mp4`: the source exited 2 with a clear line and the launch kept running a
    segmenter with no camera. Now the launch ends, with one line saying why."""
    import subprocess
    launch = Launch('segment.launch.py', {'video': tmp_path / 'nonexistent.mp4'}, tmp_path / 'launch.log')
    try:
        launch.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pass
    ended = launch.proc.poll() is not None
    launch.interrupt()
    log = launch.log()
    assert ended, 'the launch kept running after its video source failed:\n' + log[-4000:]
    assert 'does not exist' in log and 'video source exited with status 2' in log, log[-4000:]
    assert launch.left_behind == [], log[-4000:]
