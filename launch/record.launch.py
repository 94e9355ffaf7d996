"""Record a camera: `ros2 launch vidseg_ros record.launch.py image:=/camera/image_raw output_dir:=/data/bags`.

recorder_node gets `recorder_params_file` (config/recorder.yaml by default); `image` and `camera_info`
remap its default topics. Add topics (e.g. the segmenter's masks) with `topic_regex` in the params file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vidseg_ros.ros.launch_support import (check_argument_names, check_files, check_not_blank, check_topics,
                                           fastdds_profile, overrides, renamed_argument, share)


def _recorder(context):
    return [Node(package='vidseg_ros', executable='recorder_node', name='vidseg_recorder',
                 parameters=[LaunchConfiguration('recorder_params_file'), overrides(context, {'output_dir': str})],
                 remappings=[('image', LaunchConfiguration('image')),
                             ('camera_info', LaunchConfiguration('camera_info'))],
                 # closing writes what is queued (up to queue_max_bytes): no SIGTERM/SIGKILL before it can
                 sigterm_timeout='65', sigkill_timeout='5', output='screen')]


def generate_launch_description():
    args = [
        DeclareLaunchArgument('image', default_value='camera/image_raw',
                              description='Image topic to record (a relative name is in the namespace the launch is '
                                          'included under)'),
        DeclareLaunchArgument('camera_info', default_value='camera/camera_info',
                              description='CameraInfo topic to record'),
        DeclareLaunchArgument('recorder_params_file', default_value=share('config', 'recorder.yaml'),
                              description='recorder_node parameter file'),
        DeclareLaunchArgument('output_dir', default_value='',
                              description="Where bags are created ('' = output_dir of recorder_params_file)"),
    ]
    return LaunchDescription(args + [
        renamed_argument('params_file', 'recorder_params_file', share('config', 'recorder.yaml')),
        check_argument_names([a.name for a in args] + ['params_file']),
        check_not_blank('output_dir'), check_topics('image', 'camera_info'),
        check_files('recorder_params_file', node='vidseg_recorder'),
        fastdds_profile(),
        OpaqueFunction(function=_recorder),
    ])
