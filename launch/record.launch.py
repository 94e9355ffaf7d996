"""Record a camera: `ros2 launch vidseg_ros record.launch.py image:=/camera/image_raw output_dir:=/data/bags`.

Loads config/recorder.yaml; `image` and `camera_info` remap the recorder's default topics. Add topics
(e.g. the segmenter's masks) with `topic_regex` in the params file or `-p` overrides.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PKG = FindPackageShare('vidseg_ros')


def generate_launch_description():
    args = [
        DeclareLaunchArgument('image', default_value='/camera/image_raw', description='Image topic to record'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info',
                              description='CameraInfo topic to record'),
        DeclareLaunchArgument('output_dir', default_value='~/vidseg_bags', description='Where bags are created'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution([PKG, 'config', 'recorder.yaml']),
                              description='recorder_node parameters'),
    ]
    # Camera-sized messages between processes need the 32 MB shared-memory profile (see README).
    env = [SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                                  os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE',
                                                 PathJoinSubstitution([PKG, 'config', 'fastdds_shm.xml'])))]
    recorder = Node(package='vidseg_ros', executable='recorder_node', name='vidseg_recorder',
                    parameters=[LaunchConfiguration('params_file'),
                                {'output_dir': LaunchConfiguration('output_dir')}],
                    remappings=[('image', LaunchConfiguration('image')),
                                ('camera_info', LaunchConfiguration('camera_info'))],
                    output='screen')
    return LaunchDescription(args + env + [recorder])
