"""A list setting given as ``[]`` in a parameter file is empty, not its default. rcl's YAML parser gives ``[]`` no
element type (rclpy sees NOT_SET, None), and rclpy then declared the default: ``topics: []`` in a recorder file
meant to record by ``topic_regex`` alone still recorded ``image`` and ``camera_info``. A recorder left with nothing
to record says so and exits 2, instead of writing an empty bag."""
import os
import signal
import subprocess
import sys

import pytest

rclpy = pytest.importorskip('rclpy')

from vidseg_ros.ros.params import declare_settings, read_settings  # noqa: E402
from vidseg_ros.ros.recorder_params import RecorderSettings  # noqa: E402


def _params_file(tmp_path, **values):
    lines = ['vidseg_recorder:', '  ros__parameters:'] + [f'    {k}: {v}' for k, v in values.items()]
    path = tmp_path / 'recorder.yaml'
    path.write_text('\n'.join(lines) + '\n')
    return path


def test_an_empty_list_in_a_parameter_file_is_empty(tmp_path):
    path = _params_file(tmp_path, topics='[]', next_output_dirs='[]', topic_regex="'^/cam/'")
    context = rclpy.Context()
    rclpy.init(args=['--ros-args', '--params-file', str(path)], context=context)
    try:
        node = rclpy.create_node('vidseg_recorder', context=context)
        declare_settings(node, RecorderSettings, read_only=True)
        cfg = read_settings(node, RecorderSettings)
        assert cfg.topics == [] and cfg.next_output_dirs == [] and cfg.topic_regex == '^/cam/'
        assert node.get_parameter('topics').type_ == rclpy.parameter.Parameter.Type.STRING_ARRAY
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def _recorder(tmp_path, path):
    return subprocess.Popen([sys.executable, '-m', 'vidseg_ros.ros.recorder_node', '--ros-args', '--params-file',
                             str(path), '-p', f'output_dir:={tmp_path / "bags"}'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)


def test_a_recorder_with_empty_topics_records_by_its_regex_only(tmp_path):
    proc = _recorder(tmp_path, _params_file(tmp_path, topics='[]', topic_regex="'^/cam/'"))
    try:
        line = proc.stdout.readline()
        assert 'recording to' in line and "topics [] + /^/cam//" in line, line
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_a_recorder_with_nothing_to_record_exits_2_in_one_line(tmp_path):
    proc = _recorder(tmp_path, _params_file(tmp_path, topics='[]'))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert out.strip().count('\n') == 0 and 'nothing to record: topics is empty and topic_regex is off' in out, out
    assert not (tmp_path / 'bags').exists() or not any((tmp_path / 'bags').iterdir())   # no empty bag
