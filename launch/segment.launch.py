"""Segment a camera: `ros2 launch vidseg_ros segment.launch.py image:=/camera/image_raw`.

Optional: `video:=/path/clip.mp4` starts video_source_node as the camera, `record:=true` starts the
recorder alongside, `rviz:=true` opens RViz with the image, overlay and mask.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PKG = FindPackageShare('vidseg_ros')


def generate_launch_description():
    image = LaunchConfiguration('image')
    video = LaunchConfiguration('video')
    args = [
        DeclareLaunchArgument('image', default_value='/camera/image_raw', description='Input image topic'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info',
                              description='CameraInfo topic (used when use_camera_info is true)'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([PKG, 'config', 'segment.yaml']),
                              description='segment_node parameters'),
        DeclareLaunchArgument('model', default_value='', description="Checkpoint name or path ('' = default)"),
        DeclareLaunchArgument('video', default_value='',
                              description='Video file or image folder to publish as the camera (empty = off)'),
        DeclareLaunchArgument('record', default_value='false', description='Also start recorder_node'),
        DeclareLaunchArgument('rviz', default_value='false', description='Open RViz'),
    ]
    # Camera-sized messages between processes need the 32 MB shared-memory profile (see README).
    env = [SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                                  os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE',
                                                 PathJoinSubstitution([PKG, 'config', 'fastdds_shm.xml'])))]
    has_video = IfCondition(PythonExpression(["'", video, "' != ''"]))
    camera = Node(package='vidseg_ros', executable='video_source_node', name='vidseg_video_source',
                  condition=has_video, parameters=[{'source': video, 'loop': True}],
                  remappings=[('image', image), ('image/compressed', [image, '/compressed']),
                              ('camera_info', LaunchConfiguration('camera_info'))])
    segmenter = Node(package='vidseg_ros', executable='segment_node', name='vidseg_segmenter',
                     parameters=[LaunchConfiguration('params_file'), {'model': LaunchConfiguration('model')}],
                     remappings=[('image', image), ('image/compressed', [image, '/compressed']),
                                 ('camera_info', LaunchConfiguration('camera_info'))],
                     output='screen')
    recorder = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([PKG, 'launch', 'record.launch.py'])),
        condition=IfCondition(LaunchConfiguration('record')))
    rviz = Node(package='rviz2', executable='rviz2', name='rviz2', condition=IfCondition(LaunchConfiguration('rviz')),
                arguments=['-d', PathJoinSubstitution([PKG, 'config', 'vidseg.rviz'])])
    return LaunchDescription(args + env + [camera, segmenter, recorder, rviz])
