"""Segment a camera: `ros2 launch vidseg_ros segment.launch.py image:=/camera/image_raw`.

Optional: `video:=/path/clip.mp4` publishes a video file or image folder as the camera,
`record:=true` records it (record.launch.py, scoped: only the arguments passed below reach it, and the
namespace, remaps and parameters a parent launch file pushed around this one),
`rviz:=true` shows the camera, overlay, colour mask, class-id mask and confidence (when rviz2 is
installed), `lifecycle:=true` starts the managed node (drive it with `ros2 lifecycle set`).
Each node reads its own parameter file; `model` / `use_camera_info` / `output_dir` override them
when given. `ros2 launch vidseg_ros segment.launch.py -s` lists the arguments (README has the table).
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler,
                            SetLaunchConfiguration)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, NotEqualsSubstitution
from launch_ros.actions import Node

from vidseg_ros.ros.launch_support import (SEGMENTER, check_argument_names, check_files, check_not_blank,
                                           check_topics, fastdds_profile, overrides, renamed_argument,
                                           respawn_max_retries, respawn_on_failure, rviz, scoped_include, share,
                                           text_value)

RECORD_ARGS = ('image', 'camera_info', 'recorder_params_file', 'output_dir')


def _segmenter(context):
    lifecycle = IfCondition(LaunchConfiguration('lifecycle')).evaluate(context)

    def node():
        return Node(package='vidseg_ros', executable='segment_lifecycle_node' if lifecycle else 'segment_node',
                    name=SEGMENTER,
                    parameters=[LaunchConfiguration('segment_params_file'),
                                overrides(context, {'model': str, 'use_camera_info': bool})],
                    remappings=[('image', LaunchConfiguration('image')),
                                ('image/compressed', [LaunchConfiguration('image'), '/compressed']),
                                ('camera_info', LaunchConfiguration('camera_info'))],
                    output='screen')
    if not IfCondition(LaunchConfiguration('respawn')).evaluate(context):
        return [node()]
    return respawn_on_failure(node, respawn_max_retries(context), delay=2.0)


def _stop_when_the_source_fails(event, context):
    """A video source that fails (a missing file: exit 2) leaves nothing to segment: end the launch, saying
    why. One that ends normally (exit 0, the clip is over) leaves the segmenter running."""
    if event.returncode == 0:
        return None
    reason = f'video source exited with status {event.returncode}: nothing to segment, stopping the launch'
    return [LogInfo(msg=reason), EmitEvent(event=Shutdown(reason=reason))]


def generate_launch_description():
    image, record = LaunchConfiguration('image'), LaunchConfiguration('record')
    args = [
        DeclareLaunchArgument('image', default_value='camera/image_raw',
                              description='Input image topic (a relative name is in the namespace the launch is '
                                          'included under)'),
        DeclareLaunchArgument('camera_info', default_value='camera/camera_info',
                              description='CameraInfo topic (segmented with use_camera_info, recorded with record)'),
        DeclareLaunchArgument('use_camera_info', default_value='', choices=['', 'true', 'false'],
                              description="Subscribe camera_info and publish ~/camera_info ('' = as in "
                                          'segment_params_file)'),
        DeclareLaunchArgument('model', default_value='',
                              description="Checkpoint name or path ('' = as in segment_params_file)"),
        DeclareLaunchArgument('segment_params_file', default_value=share('config', 'segment.yaml'),
                              description='segment_node parameter file'),
        DeclareLaunchArgument('lifecycle', default_value='false', choices=['true', 'false'],
                              description='Start segment_lifecycle_node (unconfigured) instead of segment_node'),
        DeclareLaunchArgument('respawn', default_value='true', choices=['true', 'false'],
                              description='Restart the segmenter 2 s after it fails (a crash, a dead worker; '
                                          'not when it could not start, exit 2, nor after a clean stop)'),
        DeclareLaunchArgument('respawn_max_retries', default_value='10',
                              description='Restarts in the node\'s lifetime before giving up (launch counts them all, '
                                          'not only consecutive ones; -1 = no limit)'),
        DeclareLaunchArgument('video', default_value='',
                              description="Video file or image folder published as the camera ('' = off)"),
        DeclareLaunchArgument('video_params_file', default_value=share('config', 'video_source.yaml'),
                              description='video_source_node parameter file'),
        DeclareLaunchArgument('record', default_value='false', choices=['true', 'false'],
                              description='Also record image and camera_info (record.launch.py)'),
        DeclareLaunchArgument('recorder_params_file', default_value=share('config', 'recorder.yaml'),
                              description='recorder_node parameter file'),
        DeclareLaunchArgument('output_dir', default_value='',
                              description="Where bags are created ('' = output_dir of recorder_params_file)"),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='Open RViz (skipped with a warning where rviz2 is not installed)'),
    ]
    # The video source holds its first frame until the segmenter (and the recorder) subscribe.
    subscribers = [SetLaunchConfiguration('_video_subscribers', '1'),
                   SetLaunchConfiguration('_video_subscribers', '2', condition=IfCondition(record))]
    video_given = IfCondition(NotEqualsSubstitution(LaunchConfiguration('video'), ''))
    camera = Node(package='vidseg_ros', executable='video_source_node', name='vidseg_video_source',
                  condition=video_given,
                  parameters=[LaunchConfiguration('video_params_file'),
                              {'source': text_value(LaunchConfiguration('video')),
                               'wait_for_subscribers': LaunchConfiguration('_video_subscribers')}],
                  remappings=[('image', image), ('image/compressed', [image, '/compressed']),
                              ('camera_info', LaunchConfiguration('camera_info'))],
                  output='screen')
    # only RECORD_ARGS reach the recorder, and the namespace/remaps/parameters a parent launch set around us
    recorder = scoped_include(share('launch', 'record.launch.py'), RECORD_ARGS, condition=IfCondition(record))
    return LaunchDescription(args + subscribers + [
        renamed_argument('params_file', 'segment_params_file', share('config', 'segment.yaml')),
        check_argument_names([a.name for a in args] + ['params_file']),
        check_not_blank('model', 'video'), check_topics('image', 'camera_info'),
        check_files('segment_params_file', node=SEGMENTER),
        check_files('video_params_file', node='vidseg_video_source', condition=video_given),
        fastdds_profile(), OpaqueFunction(function=_segmenter), camera,
        RegisterEventHandler(OnProcessExit(target_action=camera, on_exit=_stop_when_the_source_fails)), recorder,
        OpaqueFunction(function=rviz, condition=IfCondition(LaunchConfiguration('rviz')))])
