"""segment.launch.py under a real `ros2 launch` on a real clip, driven with the real ros2 CLI.

One launch (video + record + use_camera_info + rviz) is shared by the checks below, in file order;
the last ones stop it with a process-group SIGINT and read the bag back.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from support.launch_helpers import Launch, error_lines, real_clip, require_launch, ros2, started
from support.ros_helpers import ROOT, Probe, stamp_of

require_launch()
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

SEG = '/vidseg_segmenter'


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('launch')
    probe = Probe(f'launch_probe_{os.getpid()}')
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    images = probe.collect(Image, '/camera/image_raw', qos)
    masks = probe.collect(Image, f'{SEG}/mask', qos)
    infos = probe.collect(CameraInfo, f'{SEG}/camera_info', qos)
    launch = Launch('segment.launch.py', {'video': real_clip(), 'record': 'true', 'use_camera_info': 'true',
                                          'rviz': 'true', 'output_dir': tmp / 'bags'}, tmp / 'launch.log')
    try:
        probe.wait_for(lambda: len(masks) >= 5, 180, 'masks from the launched segmenter')
        yield SimpleNamespace(launch=launch, probe=probe, images=images, masks=masks, infos=infos, tmp=tmp)
    except AssertionError as e:
        raise AssertionError(f'{e}\nlaunch output:\n{launch.log()[-4000:]}') from None
    finally:
        launch.interrupt()
        probe.close()


def test_masks_match_their_input_frames(launched):
    """(That every mask carries the stamp of a camera frame is checked against the bag, which has them all.)"""
    def matched():
        inputs = {stamp_of(m): m for m in launched.images}
        return inputs, [m for m in launched.masks if stamp_of(m) in inputs]

    # the probe may have matched the camera topic after the first segmented frames: wait for a common one
    launched.probe.wait_for(lambda: matched()[1], 30, 'a mask for a frame this probe received')
    with launched.probe.lock:
        inputs, masks = matched()
    m, src = masks[-1], inputs[stamp_of(masks[-1])]
    assert (m.encoding, m.height, m.width, m.header.frame_id) == ('mono8', src.height, src.width, 'camera')


def test_use_camera_info_reaches_the_node(launched):
    assert 'True' in ros2('param', 'get', SEG, 'use_camera_info')
    # The probe's two subscriptions match the node at different moments (its first camera_info may come a
    # frame before its first mask): compare the frames both received, which must all pair up.
    def both():
        masks = {stamp_of(m): m for m in launched.masks}
        lo, hi = min(masks, default=0), max(masks, default=-1)
        return masks, [i for i in launched.infos if lo <= stamp_of(i) <= hi]

    launched.probe.wait_for(lambda: len(both()[1]) >= 3, 30, f'{SEG}/camera_info while masks arrive')
    with launched.probe.lock:
        masks, infos = both()
    assert all(stamp_of(i) in masks for i in infos), 'a camera_info without the mask of its frame'
    info = infos[0]
    assert (info.height, info.width) == (masks[stamp_of(info)].height, masks[stamp_of(info)].width)


def test_each_node_gets_only_its_own_params_file(launched):
    share = Path(ros2('pkg', 'prefix', 'vidseg_ros').strip()) / 'share' / 'vidseg_ros' / 'config'
    files = {}
    for name, proc in launched.launch.children().items():
        cmd = proc.cmdline()
        files[name] = [Path(cmd[i + 1]).name for i, a in enumerate(cmd) if a == '--params-file'
                       and Path(cmd[i + 1]).parent == share]
    assert files == {'segment_node': ['segment.yaml'], 'video_source_node': ['video_source.yaml'],
                     'recorder_node': ['recorder.yaml']}
    # The recorder holds recorder.yaml's settings (output_dir comes from the launch argument). They equal
    # the dataclass defaults today, hence the command-line check above as well.
    expected = yaml.safe_load((share / 'recorder.yaml').read_text())['/**']['ros__parameters']
    # (`ros2 param dump` printed an empty mapping for this node with these ros2cli sources; the service
    # it calls is asked directly instead)
    held = launched.probe.get_parameters('/vidseg_recorder', list(expected), proc=launched.launch)
    assert {k: held[k] for k in expected if k != 'output_dir'} == {k: v for k, v in expected.items()
                                                                    if k != 'output_dir'}
    assert held['output_dir'] == str(launched.tmp / 'bags')


def test_ros2_param_set_get_describe(launched):
    described = ros2('param', 'describe', SEG, 'overlay_alpha')
    assert 'Type: double' in described and 'Overlay opacity' in described
    assert 'Set parameter successful' in ros2('param', 'set', SEG, 'overlay_alpha', '0.25')
    assert 'Double value is: 0.25' in ros2('param', 'get', SEG, 'overlay_alpha')
    assert '/vidseg_video_source' in ros2('node', 'list')


def test_rviz_without_rviz2_is_one_warning_and_the_rest_runs(launched):
    if 'rviz2' in ros2('pkg', 'list').split():
        pytest.skip('rviz2 is installed here: the launch starts it')
    log = launched.launch.log()
    assert log.count("package 'rviz2' is not installed") == 1
    assert launched.launch.proc.poll() is None
    assert set(launched.launch.children()) == {'segment_node', 'video_source_node', 'recorder_node'}


def test_sigint_to_the_group_ends_everything_cleanly(launched):
    n = len(launched.masks)
    launched.probe.wait_for(lambda: len(launched.masks) >= n + 5, 30, 'a few frames more into the bag')
    assert launched.launch.interrupt() == 0, launched.launch.log()[-4000:]
    assert launched.launch.left_behind == [], 'processes left behind'
    log = launched.launch.log()
    starts = {n: started(log, n) for n in ('segment_node', 'video_source_node', 'recorder_node')}
    assert starts == dict.fromkeys(starts, 1), f'a node was respawned during shutdown: {starts}'
    assert 'escalating to' not in log, 'a node took over 5 s to stop: launch sent SIGTERM'
    errors = error_lines(log)
    assert not errors.get('launch') and not errors.get('video_source_node'), errors
    launched.shutdown_errors = errors


def test_sigint_leaves_no_error_lines_per_node(launched):
    """Separate from the exit checks above so a failure names the node (segment_node / recorder_node
    are fixed by their owners: #11, #12)."""
    errors = getattr(launched, 'shutdown_errors', None)
    if errors is None:
        pytest.skip('the launch was not stopped by the test above')
    for node in ('segment_node', 'recorder_node'):
        assert not errors.get(node), f'{node} printed on SIGINT:\n' + '\n'.join(errors[node])
    assert not errors, errors


def test_the_recorded_bag_reads_back_and_masks_carry_its_stamps(launched):
    from rosbags.highlevel import AnyReader
    bags = list((launched.tmp / 'bags').glob('vidseg_*'))
    assert len(bags) == 1, bags
    with AnyReader([bags[0]]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        conns = [c for c in reader.connections if c.topic == '/camera/image_raw']
        frames = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=conns)]
    assert counts.get('/camera/image_raw', 0) >= 5 and counts.get('/camera/camera_info', 0) >= 5, counts
    assert all((f.encoding, f.height * f.step) == ('rgb8', len(f.data)) for f in frames[:3])
    # The recorder subscribed before the first frame and loses none: every mask up to the last recorded frame
    # is one of these frames. SIGINT reaches every node at once, so the segmenter may still serve a frame or
    # two the stopped recorder never took (a shutdown tail, seen once in a clean-clone run: 83 masks, 82 frames).
    recorded = {stamp_of(f) for f in frames}
    with launched.probe.lock:
        masks = [stamp_of(m) for m in launched.masks]
    inside = [s for s in masks if s <= max(recorded)]
    assert len(inside) >= 5 and not [s for s in inside if s not in recorded], (len(masks), len(recorded))
    assert len(masks) - len(inside) <= 3, 'more than a shutdown tail of masks after the last recorded frame'


def test_readme_launch_argument_table_is_generated():
    from vidseg_ros.tools import docs
    table = docs.launch_table()
    for arg in ('use_camera_info', 'segment_params_file', 'recorder_params_file', 'rviz', 'video'):
        assert f'`{arg}`' in table
    assert table in (ROOT / 'README.md').read_text(), 'run `vidseg docs`'
