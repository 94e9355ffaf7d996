"""The executables `ros2 run` / launch start (lib/vidseg_ros/) and the RViz config the launch writes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.launch_helpers import require_launch
from support.ros_helpers import ROOT

LIB = Path(sys.prefix) / 'lib' / 'vidseg_ros'


def test_lib_executables_run_without_the_venv_on_path(tmp_path):
    exe = LIB / 'video_source_node'
    if not exe.is_file():
        pytest.skip(f'{exe} not installed (`make install`)')
    env = {k: v for k, v in os.environ.items() if k.startswith(('ROS_', 'RMW_', 'FASTDDS_', 'AMENT_'))}
    env.update(PATH='/usr/bin:/bin', HOME=str(tmp_path))
    r = subprocess.run([str(exe), '--ros-args', '-p', f'source:={tmp_path}/nope.mp4'], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'does not exist' in r.stderr, r.stderr  # the node ran, in this venv


def test_rviz_config_follows_the_launch_topics(tmp_path):
    require_launch()
    from vidseg_ros.ros.launch_support import RVIZ_DISPLAYS, rviz_config
    path = Path(rviz_config(ROOT / 'config' / 'vidseg.rviz', '/front/image_raw', folder=str(tmp_path)))
    assert path.parent == tmp_path
    displays = yaml.safe_load(path.read_text())['Visualization Manager']['Displays']
    topics = {d['Name']: d['Topic']['Value'] for d in displays if d['Enabled']}
    assert topics == {'Camera': '/front/image_raw', 'Overlay': '/vidseg_segmenter/overlay',
                      'Colour mask': '/vidseg_segmenter/color_mask', 'Mask (class ids)': '/vidseg_segmenter/mask',
                      'Confidence': '/vidseg_segmenter/confidence'}
    assert set(topics) == set(RVIZ_DISPLAYS)


def test_rviz_config_keeps_a_users_own_displays(tmp_path):
    # a template with a display the launch does not know (added by a user) used to raise KeyError
    require_launch()
    from vidseg_ros.ros.launch_support import rviz_config
    cfg = yaml.safe_load((ROOT / 'config' / 'vidseg.rviz').read_text())
    cfg['Visualization Manager']['Displays'] += [
        {'Name': 'Lidar', 'Class': 'rviz_default_plugins/PointCloud2', 'Enabled': True,
         'Topic': {'Value': '/points'}}, {'Name': 'Grid', 'Class': 'rviz_default_plugins/Grid', 'Enabled': True}]
    template = tmp_path / 'mine.rviz'
    template.write_text(yaml.safe_dump(cfg))
    out = yaml.safe_load(Path(rviz_config(template, '/cam/image', folder=str(tmp_path))).read_text())
    displays = {d['Name']: d for d in out['Visualization Manager']['Displays']}
    assert displays['Lidar']['Topic']['Value'] == '/points' and 'Topic' not in displays['Grid']
    assert displays['Camera']['Topic']['Value'] == '/cam/image'
