"""The RViz config follows a namespace pushed around the launch (``PushRosNamespace``): its topics were
absolute, so under PushRosNamespace('left') RViz showed /vidseg_segmenter/overlay, which nobody published."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.launch_helpers import require_launch

OUTPUTS = {'Overlay': 'overlay', 'Colour mask': 'color_mask', 'Mask (class ids)': 'mask',
           'Confidence': 'confidence'}


def _topics(path) -> dict:
    displays = yaml.safe_load(Path(path).read_text())['Visualization Manager']['Displays']
    return {d['Name']: d['Topic']['Value'] for d in displays if d['Enabled']}


def _context(image: str, *namespaces: str):
    """A launch context as segment.launch.py sees it, inside ``PushRosNamespace(ns)`` for each of
    ``namespaces`` (launch_ros's own action, executed)."""
    from launch import LaunchContext
    from launch.actions import SetLaunchConfiguration
    from launch_ros.actions import PushRosNamespace
    context = LaunchContext()
    SetLaunchConfiguration('image', image).execute(context)
    for ns in namespaces:
        PushRosNamespace(ns).execute(context)
    return context


@pytest.mark.parametrize('namespaces, image, camera, prefix', [
    (('left',), 'camera/image_raw', '/left/camera/image_raw', '/left/vidseg_segmenter'),
    (('left',), '/camera/image_raw', '/camera/image_raw', '/left/vidseg_segmenter'),     # absolute: as given
    (('robot', 'front'), 'image', '/robot/front/image', '/robot/front/vidseg_segmenter'),
    ((), 'camera/image_raw', '/camera/image_raw', '/vidseg_segmenter'),                   # no namespace
])
def test_rviz_config_under_a_pushed_namespace(tmp_path, namespaces, image, camera, prefix):
    require_launch()
    from vidseg_ros.ros.launch_support import launch_rviz_config
    path = launch_rviz_config(_context(image, *namespaces), folder=str(tmp_path))
    assert Path(path).parent == tmp_path
    assert _topics(path) == {'Camera': camera, **{name: f'{prefix}/{out}' for name, out in OUTPUTS.items()}}


def test_resolve_topic_as_rcl_does():
    require_launch()
    from vidseg_ros.ros.launch_support import resolve_topic
    assert resolve_topic('~/mask', '/left') == '/left/vidseg_segmenter/mask'
    assert resolve_topic('~/mask', '') == '/vidseg_segmenter/mask'
    assert resolve_topic('cam', '/a/b/') == '/a/b/cam' and resolve_topic('/cam', '/a') == '/cam'


def test_the_launch_rviz_action_writes_the_namespaced_config(tmp_path, monkeypatch):
    """segment.launch.py's rviz action itself (rviz2 is not installed here: its package lookup is made to
    succeed), in a context under PushRosNamespace('left')."""
    require_launch()
    from launch import logging as launch_logging
    from vidseg_ros.ros import launch_support
    monkeypatch.setattr(launch_support, 'get_package_prefix', lambda package: '/opt/ros/rviz2')
    monkeypatch.setattr(launch_logging.launch_config, '_log_dir', str(tmp_path))   # where the config goes
    (node,) = launch_support.rviz(_context('camera/image_raw', 'left'))
    assert type(node).__name__ == 'Node'
    (path,) = tmp_path.glob('*.rviz')
    assert _topics(path) == {'Camera': '/left/camera/image_raw',
                             **{name: f'/left/vidseg_segmenter/{out}' for name, out in OUTPUTS.items()}}
