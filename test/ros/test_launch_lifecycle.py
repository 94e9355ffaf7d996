"""segment.launch.py lifecycle:=true driven with `ros2 lifecycle`, respawn after a crash, and a user's
recorder params file."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from support.launch_helpers import BIN, Launch, real_clip, require_launch, ros2, started
from support.ros_helpers import ROOT, Probe

require_launch()
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

SEG = '/vidseg_segmenter'


def wait_for_node(name: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run([str(BIN / 'ros2'), 'lifecycle', 'get', name], capture_output=True, text=True,
                           timeout=60)
        if r.returncode == 0 or time.monotonic() > deadline:
            assert r.returncode == 0, r.stderr
            return r.stdout
        time.sleep(1.0)


def test_lifecycle_transitions_and_own_recorder_params(tmp_path):
    params = tmp_path / 'my_recorder.yaml'
    params.write_text((ROOT / 'config' / 'recorder.yaml').read_text().replace('bag_prefix: vidseg',
                                                                            'bag_prefix: launchtest'))
    probe = Probe(f'lifecycle_probe_{os.getpid()}')
    masks = probe.collect(Image, f'{SEG}/mask', QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    launch = Launch('segment.launch.py', {'video': real_clip(), 'lifecycle': 'true', 'record': 'true',
                                          'recorder_params_file': params, 'output_dir': tmp_path / 'bags'},
                    tmp_path / 'launch.log')
    try:
        assert wait_for_node(SEG).startswith('unconfigured')
        assert 'Transitioning successful' in ros2('lifecycle', 'set', SEG, 'configure', timeout=120)
        assert 'Transitioning successful' in ros2('lifecycle', 'set', SEG, 'activate')
        probe.wait_for(lambda: len(masks) >= 3, 60, 'masks after activate')
        assert ros2('lifecycle', 'get', SEG).startswith('active')
        assert 'Transitioning successful' in ros2('lifecycle', 'set', SEG, 'deactivate')
        time.sleep(1.0)
        n = len(masks)
        time.sleep(1.5)
        assert len(masks) == n, 'masks kept coming after deactivate'
        assert ros2('lifecycle', 'get', SEG).startswith('inactive')
        assert 'String value is: launchtest' in ros2('param', 'get', '/vidseg_recorder', 'bag_prefix')
        launch.children()['segment_lifecycle_node'].kill()  # a crash: launch respawns it (unconfigured)
        deadline = time.monotonic() + 30
        while started(launch.log(), 'segment_lifecycle_node') < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started(launch.log(), 'segment_lifecycle_node') == 2, 'not respawned'
        assert wait_for_node(SEG).startswith('unconfigured')
        # told to stop (SIGTERM to the node alone): a clean exit, which respawn leaves alone
        node = launch.children()['segment_lifecycle_node']
        node.terminate()
        node.wait(30)
        time.sleep(4.0)  # twice the respawn delay
        assert f'process has finished cleanly [pid {node.pid}]' in launch.log()
        assert started(launch.log(), 'segment_lifecycle_node') == 2, 'a cleanly stopped node was restarted'
        assert 'segment_lifecycle_node' not in launch.children()
        assert launch.proc.poll() is None, 'launch ended with the video source and recorder still running'
    except AssertionError as e:
        raise AssertionError(f'{e}\nlaunch output:\n{launch.log()[-4000:]}') from None
    finally:
        rc = launch.interrupt()
        probe.close()
    assert rc == 0, launch.log()[-4000:]
    assert [p.name for p in (tmp_path / 'bags').iterdir()][0].startswith('launchtest_')


def test_a_node_that_cannot_start_is_not_respawned(tmp_path):
    # a model that will not load: the node exits 2 after one line saying why; a restart would fail the same
    # way (it was restarted respawn_max_retries times, 2 s apart, burying that line), and launch then ends
    r = subprocess.run([str(BIN / 'ros2'), 'launch', 'vidseg_ros', 'segment.launch.py',
                        f'model:={tmp_path}/missing.pt'],
                       capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    starts = started(out, 'segment_node')
    assert starts == 1, f'started {starts} times, expected once:\n{out[-4000:]}'
    assert 'missing.pt' in out, out[-4000:]
    assert 'could not start (exit status 2' in out and 'not restarting it' in out, out[-4000:]
    assert r.returncode == 0, out[-4000:]


@pytest.mark.parametrize('launch_file, node, params, says', [
    ('segment.launch.py', 'vidseg_segmenter', 'model: {tmp}/users_own_model.pt', 'users_own_model.pt'),
    ('record.launch.py', 'vidseg_recorder', 'compression: from_the_users_file', "'from_the_users_file'")])
def test_the_first_releases_params_file_argument_still_reads_the_users_file(tmp_path, launch_file, node, params,
                                                                            says):
    # ros2 launch takes an undeclared name:=value silently: the first release's params_file:= was dropped and
    # the node ran the shipped defaults (the shipped model) without a word. The file here makes the node exit
    # at start-up with a line that shows it was read.
    old = tmp_path / 'robot.yaml'
    old.write_text(f'{node}:\n  ros__parameters:\n    {params.format(tmp=tmp_path)}\n')
    r = subprocess.run([str(BIN / 'ros2'), 'launch', 'vidseg_ros', launch_file, f'params_file:={old}'],
                       capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert 'is the old name of' in out and says in out, out[-4000:]


CRASHING_LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import ExecuteProcess, OpaqueFunction
from vidseg_ros.ros.launch_support import respawn_on_failure

def crasher():   # a node that crashes at once (exit 1), however often it is started
    return ExecuteProcess(cmd=[sys.executable, '-c', 'import sys; sys.exit(1)'], name='crasher', output='screen')

service = LaunchService()
service.include_launch_description(LaunchDescription([
    OpaqueFunction(function=lambda _: respawn_on_failure(crasher, max_retries=2, delay=0.1))]))
sys.exit(service.run())
"""


def test_a_crashing_node_is_respawned_a_bounded_number_of_times(tmp_path):
    script = tmp_path / 'crashing.launch.py'
    script.write_text(CRASHING_LAUNCH)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert started(out, 'crasher') == 3, f'expected 1 start + 2 retries:\n{out[-4000:]}'
    assert 'crasher-3' in out and 'crasher-4' not in out, out[-4000:]
    assert 'failed (exit status 1) after 2 restart(s): not restarting it again (respawn_max_retries:=2)' in out, out
    assert r.returncode == 0, out[-4000:]


def test_nonsense_respawn_max_retries_is_one_clear_error():
    r = subprocess.run([str(BIN / 'ros2'), 'launch', 'vidseg_ros', 'segment.launch.py', 'respawn_max_retries:=often'],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert "respawn_max_retries must be an integer >= -1" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize('launch_file, argument', [('segment.launch.py', 'segment_params_file'),
                                                    ('segment.launch.py', 'params_file'),
                                                    ('segment.launch.py', 'video_params_file'),
                                                    ('record.launch.py', 'recorder_params_file')])
def test_a_params_file_that_is_not_a_file_stops_the_launch_in_one_escaped_line(launch_file, argument):
    # launch_ros only warned ("Parameter file path is not a file") and started the node with its defaults: a
    # typo in the path ran the shipped model with the shipped settings
    extra = ['video:=/tmp/clip.mp4'] if argument == 'video_params_file' else []
    r = subprocess.run([str(BIN / 'ros2'), 'launch', 'vidseg_ros', launch_file, 'respawn:=false', *extra,
                        f'{argument}:=/tmp/missing\x1b]0;owned\x07.yaml'],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-4000:]
    assert 'process started' not in out, out[-4000:]
    new_name = {'params_file': 'segment_params_file'}.get(argument, argument)
    (line,) = [ln for ln in out.splitlines() if 'is not a file' in ln and 'launch_ros' not in ln]
    assert f'{new_name}:=/tmp/missing\\x1b]0;owned\\x07.yaml is not a file' in line and '\x1b' not in line, line
