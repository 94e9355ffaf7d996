"""Launch arguments a user types wrong: one line from our launch file naming the argument, a non-zero exit,
and no node started to die of it (or to run with its defaults as if nothing was wrong)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from support.launch_helpers import Launch, require_launch
from support.ros_helpers import ROOT

require_launch()
SEGMENTER = 'vidseg_segmenter'

FILES = {'empty': '', 'text': 'just some text\n', 'other_node': 'some_other_node:\n  ros__parameters:\n    x: 1\n',
         'misspelt': '/**:\n  ros_parameters:\n    model: mine\n', 'not_yaml': 'a: [1, 2\n'}
SAYS = {'empty': 'holds nothing (an empty file)', 'text': 'holds no <node>: ros__parameters: section',
        'other_node': 'holds parameters for some_other_node only', 'misspelt': 'holds no <node>: ros__parameters',
        'not_yaml': 'is not YAML (line 2)'}
NODE = {'segment_params_file': SEGMENTER, 'video_params_file': 'vidseg_video_source',
        'recorder_params_file': 'vidseg_recorder'}


def run_launch(tmp_path: Path, launch_file: str, args: dict, timeout: float = 90.0) -> tuple[int | None, str]:
    """(exit status or None when it was still running after ``timeout`` s, output) of a real `ros2 launch`."""
    launch = Launch(launch_file, args, tmp_path / 'launch.log')
    try:
        launch.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    rc = launch.proc.poll()
    launch.interrupt()
    return rc, launch.log()


def assert_one_line_before_any_node(rc, log: str, argument: str, *says: str) -> None:
    assert rc is not None, 'the launch kept running:\n' + log[-4000:]
    assert rc != 0, log[-4000:]
    assert 'process started' not in log, 'a node was started:\n' + log[-4000:]
    assert 'Traceback' not in log, log[-4000:]
    lines = [ln for ln in log.splitlines() if f'{argument}:=' in ln]
    assert len(lines) == 1 and all(s in lines[0] for s in says), log[-4000:]


@pytest.mark.parametrize('kind', sorted(FILES))
@pytest.mark.parametrize('launch_file, argument', [('segment.launch.py', 'segment_params_file'),
                                                    ('segment.launch.py', 'video_params_file'),
                                                    ('record.launch.py', 'recorder_params_file')])
def test_a_params_file_with_nothing_for_the_node_stops_the_launch_in_one_line(tmp_path, launch_file, argument,
                                                                             kind):
    # rcl took an empty file, a text file, a file of another node's parameters or one with a misspelt
    # ros__parameters without a word, and the node ran the shipped defaults (the shipped model); a file
    # that is not YAML made the node die in rcl's words, which did not say which launch argument named it
    params = tmp_path / f'{kind}.yaml'
    params.write_text(FILES[kind])
    extra = {'video': tmp_path / 'clip.mp4'} if argument == 'video_params_file' else {}
    rc, log = run_launch(tmp_path, launch_file, {argument: params, **extra}, timeout=60)
    assert_one_line_before_any_node(rc, log, argument, f'{params} {SAYS[kind]}')
    if kind != 'not_yaml':
        assert f'no parameters for {NODE[argument]}' in log, log[-4000:]


@pytest.mark.parametrize('launch_file, argument, value, says', [
    ('segment.launch.py', 'image', 'my camera', 'must not contain characters other than alphanumerics'),
    ('segment.launch.py', 'image', '//cam//image', "must not contain repeated '/'"),
    ('segment.launch.py', 'camera_info', '1cam', 'must not start with a number'),
    ('segment.launch.py', 'image', ' ', 'it is blank'),
    ('record.launch.py', 'image', 'my camera', 'must not contain characters other than alphanumerics'),
    ('record.launch.py', 'camera_info', 'a//b', "must not contain repeated '/'")])
def test_a_topic_argument_that_is_no_topic_name_stops_the_launch_in_one_line(tmp_path, launch_file, argument, value,
                                                                            says):
    # each node given it as a remap died with rcl's "Couldn't parse remap rule: '-r image:=my camera'. Error:
    # Expected lexeme type (19) not found" (or "error not set"), one node after the other
    rc, log = run_launch(tmp_path, launch_file, {argument: value}, timeout=60)
    assert_one_line_before_any_node(rc, log, argument, f'{argument}:={value!r} is not a valid topic name: ', says)


@pytest.mark.parametrize('launch_file, argument', [('segment.launch.py', 'model'), ('segment.launch.py', 'video'),
                                                    ('record.launch.py', 'output_dir')])
def test_a_blank_argument_stops_the_launch_in_one_line(tmp_path, launch_file, argument):
    # launch_ros read ' ' as YAML null: "Allowed value types are bytes, bool, int, ... Got <class 'NoneType'>
    # for "model". If the parameter is meant to be a string, try wrapping it in launch_ros...ParameterValue"
    rc, log = run_launch(tmp_path, launch_file, {argument: '  '}, timeout=60)
    assert_one_line_before_any_node(rc, log, argument, f"{argument}:='  ' is blank")
    assert 'Allowed value types' not in log, log[-4000:]


def test_model_that_yaml_reads_as_a_number_reaches_the_node_as_its_name(tmp_path):
    # model:=2024 reached the node as the integer 2024: "InvalidParameterTypeException: Trying to set parameter
    # 'model' to '2024' of type 'INTEGER', expecting type 'STRING'"; model:=[a, b] was a list the node ignored
    rc, log = run_launch(tmp_path, 'segment.launch.py', {'model': '2024', 'respawn': 'false'}, timeout=120)
    assert rc is not None, log[-4000:]
    assert 'InvalidParameterType' not in log, log[-4000:]
    assert "model '2024' not found" in log, log[-4000:]


def test_output_dir_that_yaml_reads_as_a_number_is_the_folder(tmp_path, monkeypatch):
    # output_dir:=2024 (a folder of that year, relative to where launch runs): the recorder died with
    # "Trying to set parameter 'output_dir' to '2024' of type 'INTEGER', expecting type 'STRING'"
    monkeypatch.chdir(tmp_path)
    launch = Launch('record.launch.py', {'output_dir': '2024'}, tmp_path / 'launch.log')
    try:
        launch.wait_for_output('recording to 2024/', 90)
    finally:
        launch.interrupt()
    assert 'InvalidParameterType' not in launch.log(), launch.log()[-4000:]
    assert (tmp_path / '2024').is_dir(), launch.log()[-4000:]


def test_video_that_yaml_reads_as_a_number_is_the_folder(tmp_path, monkeypatch):
    # video:=2024 (an image folder named 2024): the source died of a parameter of type INTEGER; here the folder
    # is empty, so the source says so in its own words and the launch stops
    monkeypatch.chdir(tmp_path)
    (tmp_path / '2024').mkdir()
    rc, log = run_launch(tmp_path, 'segment.launch.py', {'video': '2024', 'respawn': 'false'}, timeout=120)
    assert 'InvalidParameterType' not in log, log[-4000:]
    assert 'no images' in log and 'found in 2024' in log, log[-4000:]


@pytest.mark.parametrize('text', [
    '/**:\n  ros__parameters: {a: 1}\n', f'{SEGMENTER}:\n  ros__parameters: {{a: 1}}\n',
    f'/robot1/{SEGMENTER}:\n  ros__parameters: {{a: 1}}\n', f'robot1:\n  {SEGMENTER}:\n    ros__parameters: {{a: 1}}\n',
    '/**/*:\n  ros__parameters: {a: 1}\n', f'other:\n  ros__parameters: {{}}\n{SEGMENTER}:\n  ros__parameters: {{}}\n'])
def test_params_files_that_name_the_node_pass(tmp_path, text):
    from vidseg_ros.ros.launch_support import params_problem
    path = tmp_path / 'p.yaml'
    path.write_text(text)
    assert params_problem(path, SEGMENTER) == ''


@pytest.mark.parametrize('name, node', [('segment.yaml', SEGMENTER), ('video_source.yaml', 'vidseg_video_source'),
                                        ('recorder.yaml', 'vidseg_recorder')])
def test_the_shipped_params_files_pass(name, node):
    from vidseg_ros.ros.launch_support import params_problem
    path = ROOT / 'config' / name
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    assert params_problem(path, node) == ''


@pytest.mark.parametrize('name', ['camera/image_raw', '/robot1/front/image_raw', '~/image', 'front/{node}/x'])
def test_valid_topic_names_pass(name):
    from vidseg_ros.ros.launch_support import topic_problem
    assert topic_problem(name) == ''


@pytest.mark.parametrize('launch_file, typo, meant', [
    ('segment.launch.py', 'recrod', 'record'), ('segment.launch.py', 'segment_param_file', 'segment_params_file'),
    ('record.launch.py', 'ouput_dir', 'output_dir')])
def test_a_misspelt_argument_name_is_one_warning(tmp_path, launch_file, typo, meant):
    # ros2 launch takes an undeclared name:=value without a word: recrod:=true ran without recording.
    # (image:='a b' ends the launch at once, after the names are checked.) A name not close to one of ours,
    # such as a parent launch file's own argument, says nothing.
    rc, log = run_launch(tmp_path, launch_file, {typo: 'x', 'robot_name': 'r1', 'image': 'a b'}, timeout=60)
    assert rc is not None, log[-4000:]
    warnings = [ln for ln in log.splitlines() if 'is not an argument of this launch file' in ln]
    assert len(warnings) == 1 and f'{typo}:= is not an argument' in warnings[0] and f'did you mean {meant}:=?' \
        in warnings[0], log[-4000:]


def test_video_under_the_home_folder_with_a_tilde(tmp_path, monkeypatch):
    # the shell leaves video:=~/frames as it is; the source said 'video source ~/frames does not exist' where
    # model:=~/... and output_dir:=~/... were found. Here ~/frames is an empty folder: the source says so.
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'frames').mkdir()
    rc, log = run_launch(tmp_path, 'segment.launch.py', {'video': '~/frames', 'respawn': 'false'}, timeout=120)
    assert 'does not exist' not in log, log[-4000:]
    assert f'found in {tmp_path}/frames' in log, log[-4000:]
