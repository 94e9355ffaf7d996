"""Pieces of launch/*.launch.py that conditions and substitutions cannot express.

Imports launch/launch_ros (a ROS install, or ../shared/ros2_extras in the venv): only launch files,
and their tests import this module (tools/docs reads the launch files with launch's own API).
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import logging as launch_logging
from launch.actions import (GroupAction, IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable, SetLaunchConfiguration, TimerAction)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from vidseg_ros.config import MAX_YAML_BYTES, ConfigError, parse_yaml
from vidseg_ros.constants import EXIT_CANNOT_START
from vidseg_ros.files import open_regular
from vidseg_ros.text import clip

PKG = 'vidseg_ros'
SEGMENTER = 'vidseg_segmenter'
# RViz display name in config/vidseg.rviz -> segment_node output it shows (None = the input image)
RVIZ_DISPLAYS = {'Camera': None, 'Overlay': 'overlay', 'Colour mask': 'color_mask',
                 'Mask (class ids)': 'mask', 'Confidence': 'confidence'}


def share(*parts: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PKG), *parts])


def renamed_argument(old: str, new: str, default) -> OpaqueFunction:
    """``old:=value``, an argument's name before it was renamed ``new``, still sets ``new``, with a warning
    (``new`` given too wins); to be placed after ``new``'s declaration and before the nodes that read it.

    ros2 launch takes an undeclared ``name:=value`` without a word: a user's ``params_file:=robot.yaml`` from
    the first release ran the node with the shipped defaults and the shipped model, and said nothing.
    """
    def apply(context):
        value = context.launch_configurations.get(old)
        if value is None:
            return None
        logger = launch_logging.get_logger('launch')
        given = context.launch_configurations.get(new)
        if given is not None and given != default.perform(context):
            logger.warning(f'{old}:= is the old name of {new}:=, which is given too: {old}:={clip(value, 200)} '
                           'is not used')
            return None
        logger.warning(f'{old}:= is the old name of {new}:= (renamed); using {clip(value, 200)}')
        return [SetLaunchConfiguration(new, value)]
    return OpaqueFunction(function=apply)


def check_argument_names(declared, **kwargs) -> OpaqueFunction:
    """Warn, in one line each, about a ``name:=value`` that is not one of the ``declared`` launch arguments but
    close to one (``recrod:=true``): ros2 launch takes an undeclared name without a word, and the launch ran
    without recording. Only close names: a parent launch file's own arguments reach us too, and are its
    business. ``kwargs``: the action's (condition)."""
    import difflib
    declared = list(declared)

    def check(context):
        logger = launch_logging.get_logger('launch')
        for name in sorted(context.launch_configurations):
            if name in declared or name.startswith('_') or name in ROS_SCOPE:
                continue
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.75)
            if close:
                logger.warning(f'{clip(name, 80)}:= is not an argument of this launch file and is not used: '
                               f'did you mean {close[0]}:=? (`ros2 launch {PKG} <file> -s` lists them)')
    return OpaqueFunction(function=check, **kwargs)


def _check_each(names, problem, **kwargs) -> OpaqueFunction:
    """Stop the launch with one line, ``problem(name, value)``, for the first of the ``names`` launch arguments
    whose value has one ('' when it has none). ``kwargs``: the action's (condition)."""
    def check(context):
        for name in names:
            text = problem(name, LaunchConfiguration(name).perform(context))
            if text:
                raise ValueError(text)
    return OpaqueFunction(function=check, **kwargs)


def check_files(*names: str, node: str | None = None, **kwargs) -> OpaqueFunction:
    """Stop the launch with one line when one of the ``names`` launch arguments (parameter files) is not a file:
    launch_ros only warns ("Parameter file path is not a file") and starts the node with its defaults, so a
    typo in the path ran the shipped model with the shipped settings. With ``node`` (the node's name), also
    when the file is not YAML or holds no parameters for ``node`` (``params_problem``)."""
    def problem(name, path):
        if not os.path.isfile(path):
            return f'{name}:={clip(path, 200)} is not a file'
        text = params_problem(Path(path), node) if node else ''
        return f'{name}:={clip(path, 200)} {text}' if text else ''
    return _check_each(names, problem, **kwargs)


def _node_paths(tree, prefix: str = '') -> list[str]:
    """The node names (``ns/node``, ``/**``) a ROS parameter file's mapping gives ``ros__parameters`` to."""
    found = []
    for key, value in tree.items():
        path = f'{prefix}/{str(key).strip("/")}'
        if not isinstance(value, dict):
            continue
        if 'ros__parameters' in value:
            found.append(path)
        found += _node_paths({k: v for k, v in value.items() if k != 'ros__parameters'}, path)
    return found


def params_problem(path: Path, node: str) -> str:
    """Why the parameter file ``path`` gives nothing to the node ``node``, or '' when it does (an entry named
    ``node``, ``ns/node``, ``*`` or ``/**``). rcl takes an empty file, a text file, or a file of another
    node's parameters without a word, and the node ran with its defaults (the shipped model)."""
    try:
        with open_regular(path, 'rb') as f:
            text = f.read(MAX_YAML_BYTES + 1).decode(errors='replace')
    except OSError as e:
        return f'cannot be read: {e.strerror or e}'
    try:   # bounded: 10**5 nested brackets were a RecursionError, a 50 MB file took minutes, an alias bomb hours
        tree = parse_yaml(text, path.name)
    except ConfigError as e:
        cause = e.__cause__
        if isinstance(cause, yaml.YAMLError):
            mark = getattr(cause, 'problem_mark', None)
            where = f' (line {mark.line + 1})' if mark is not None else ''
            return f'is not YAML{where}: {clip(getattr(cause, "problem", None) or cause, 120)}'
        return f'is not usable: {clip(str(e).removeprefix(path.name + ": "), 120)}'
    paths = _node_paths(tree) if isinstance(tree, dict) else []
    if any(p.rsplit('/', 1)[-1] in (node, '*', '**') for p in paths):
        return ''
    holds = (f'parameters for {clip(", ".join(p.lstrip("/") for p in paths), 120)} only' if paths
             else 'no <node>: ros__parameters: section' if tree else 'nothing (an empty file)')
    return (f'holds {holds}: no parameters for {node} (it would run with its defaults); '
            f'give its entry as {node}: or /**: with ros__parameters:')


def check_topics(*names: str, **kwargs) -> OpaqueFunction:
    """Stop the launch with one line when one of the ``names`` launch arguments is not a valid topic name
    (``image:='my camera'``, ``//cam``, ``1cam``): each node given it as a remap failed in rcl's words, which
    named neither the launch argument nor what is wrong, and one node after the other died of it."""
    def problem(name, value):
        text = topic_problem(value)
        return f'{name}:={clip(repr(value), 200)} is not a valid topic name: {text}' if text else ''
    return _check_each(names, problem, **kwargs)


def topic_problem(name: str) -> str:
    """Why ``name`` is not a topic name a remap takes (one line), or '' when it is one."""
    from rclpy.expand_topic_name import expand_topic_name
    from rclpy.validate_full_topic_name import validate_full_topic_name
    if not name.strip():
        return 'it is blank'
    try:
        validate_full_topic_name(expand_topic_name(name, SEGMENTER, '/'))
    except Exception as e:  # rclpy raises ValueError or InvalidTopicNameException (a multi-line message)
        text = str(e).splitlines()[0]
        text = re.sub(r'^(Invalid topic name: |topic name .* is invalid: )', '', text)
        return clip(re.sub(r', at /\S+:\d+$', '', text).rstrip(': '), 160)
    return ''


def check_not_blank(*names: str, **kwargs) -> OpaqueFunction:
    """Stop the launch with one line when one of the ``names`` launch arguments is only spaces: launch_ros read
    ``model:=' '`` as YAML null and stopped in its own words ("Allowed value types are ... Got NoneType"), and
    ``''`` already means "as in the parameter file"."""
    def problem(name, value):
        blank = value and not value.strip()
        return f"{name}:={value!r} is blank: give a value, or leave {name}:= out" if blank else ''
    return _check_each(names, problem, **kwargs)


def text_value(value) -> ParameterValue:
    """A launch argument passed to a string parameter as the text typed: launch_ros reads a parameter's value as
    YAML, so ``model:=2024`` (a checkpoint name) reached the node as an integer and it stopped
    ("expecting type 'STRING'"), ``output_dir:=2024`` too, and ``model:=[a, b]`` was a list."""
    return ParameterValue(value, value_type=str)


def fastdds_profile() -> SetEnvironmentVariable:
    """Camera-sized messages between processes need the 32 MB shared-memory profile (see README);
    a profile the user exported wins."""
    return SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                                  os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE',
                                                 share('config', 'fastdds_shm.xml')))


# launch_ros keeps the ROS scope of an include in these launch configurations: PushRosNamespace,
# SetRemap, SetParameter / SetParametersFromFile
ROS_SCOPE = ('ros_namespace', 'ros_remaps', 'global_params')


def scoped_include(launch_file, names, **kwargs) -> OpaqueFunction:
    """Include ``launch_file`` with only the launch arguments ``names`` and the ROS scope of the includer.

    A ``GroupAction(forwarding=False)`` keeps our other arguments out of it (``params_file:=``, our old name
    of ``segment_params_file``, also named the recorder's file), but it drops every launch configuration,
    launch_ros's own among them: under a user's ``PushRosNamespace('robot1')`` the recorder ran as
    ``/vidseg_recorder``, two robots had one name and one set of services, and a relative ``image`` was
    recorded outside the namespace. ``kwargs``: the action's (condition)."""
    def include(context):
        ros = {k: copy.copy(context.launch_configurations[k]) for k in ROS_SCOPE if k in context.launch_configurations}
        return [GroupAction(
            scoped=True, forwarding=False, launch_configurations={k: LaunchConfiguration(k) for k in names},
            actions=[OpaqueFunction(function=lambda ctx: ctx.launch_configurations.update(ros)),
                     IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                                              launch_arguments={k: LaunchConfiguration(k) for k in names}.items())])]
    return OpaqueFunction(function=include, **kwargs)


def overrides(context, names: dict) -> dict:
    """ROS parameters for the launch arguments in ``names`` ({name: str or bool}) that were given a value: an
    empty argument keeps the parameter file's setting instead of overwriting it with ''. A ``str`` one is the
    text typed (``text_value``), never YAML's reading of it."""
    return {n: text_value(LaunchConfiguration(n)) if kind is str else LaunchConfiguration(n)
            for n, kind in names.items() if LaunchConfiguration(n).perform(context) != ''}


def resolve_topic(name: str, namespace: str = '', node: str = SEGMENTER) -> str:
    """The absolute topic a node ``node`` in ``namespace`` resolves ``name`` to: rcl's own expansion (relative
    names go into the namespace, ``~`` into the node's own); ``namespace`` as launch keeps it (``left``, ``/a/b/``)."""
    from rclpy.expand_topic_name import expand_topic_name
    return expand_topic_name(name, node, '/' + namespace.strip('/'))


def rviz_config(template: Path, image: str, segmenter: str = SEGMENTER, folder: str | None = None,
                namespace: str = '') -> str:
    """Write an RViz config whose displays follow this launch's topics; returns its path.

    ``namespace``: the one the segmenter runs in (a ``PushRosNamespace`` around the launch): its outputs are
    ``/<namespace>/<segmenter>/<output>``, and a relative ``image`` is in it too.
    Displays the table does not know (a user's own, added to the template) keep their topic. The file goes
    to ``folder`` (the launch's own log folder by default: it lives and is cleaned up with that run's logs).
    """
    cfg = yaml.safe_load(Path(template).read_text())
    for display in cfg.get('Visualization Manager', {}).get('Displays', []):
        if display.get('Name') not in RVIZ_DISPLAYS or not isinstance(display.get('Topic'), dict):
            continue
        output = RVIZ_DISPLAYS[display['Name']]
        topic = f'~/{output}' if output else image
        display['Topic']['Value'] = resolve_topic(topic, namespace, segmenter)
    if folder is None:
        folder = launch_logging.launch_config.log_dir
    fd, path = tempfile.mkstemp(prefix='vidseg_', suffix='.rviz', dir=folder)
    with os.fdopen(fd, 'w') as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def respawn_max_retries(context) -> int:
    """The ``respawn_max_retries`` launch argument as an int (-1 = no limit): a node that crashes again and
    again stops being restarted instead of looping every 2 s for ever."""
    text = LaunchConfiguration('respawn_max_retries').perform(context)
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < -1:
        raise ValueError(f"respawn_max_retries must be an integer >= -1 (-1 = no limit), got {text[:40]!r}")
    return value


def respawn_on_failure(make_node, max_retries: int, delay: float, restarts: int = 0) -> list:
    """``make_node()``'s node, started again ``delay`` s after it *fails* (a non-zero exit status: a crash,
    a dead worker, a kill), at most ``max_retries`` times in all (-1 = no limit).

    launch_ros's own ``respawn`` restarts a node after any exit, a clean one included: a SIGINT/SIGTERM sent
    to the node alone brought it back 2 s later, and so did a Ctrl-C that reached the nodes but not launch
    (a launch started as a script's background job inherits SIGINT ignored), which then never ended.
    A clean exit (status 0) is the node being told to stop, so it stays stopped. Nor is a node restarted
    that could not start (``EXIT_CANNOT_START``: a bad setting, a model that will not load): it said why in
    one line, and a restart met the same failure ten times, 2 s apart, burying that line.
    """
    node = make_node()

    def on_exit(event, context):
        if event.returncode == 0 or context.is_shutdown:
            return None
        if event.returncode == EXIT_CANNOT_START:
            launch_logging.get_logger('launch').error(
                f'{event.action.name} could not start (exit status {event.returncode}; its reason is above): '
                'not restarting it, a restart would fail the same way')
            return None
        if 0 <= max_retries <= restarts:
            launch_logging.get_logger('launch').error(
                f'{event.action.name} failed (exit status {event.returncode}) after {restarts} restart(s): '
                f'not restarting it again (respawn_max_retries:={max_retries})')
            return None
        return TimerAction(period=delay, actions=[OpaqueFunction(
            function=lambda _: respawn_on_failure(make_node, max_retries, delay, restarts + 1))])
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]


def launch_rviz_config(context, folder: str | None = None) -> str:
    """The RViz config of this launch: its ``image`` argument and the namespace pushed around it
    (``PushRosNamespace`` keeps it in the ``ros_namespace`` launch configuration; the topics were absolute, so
    under ``PushRosNamespace('left')`` RViz showed ``/vidseg_segmenter/overlay``, which nobody published)."""
    return rviz_config(Path(get_package_share_directory(PKG)) / 'config' / 'vidseg.rviz',
                       LaunchConfiguration('image').perform(context), folder=folder,
                       namespace=context.launch_configurations.get('ros_namespace') or '')


def rviz(context) -> list:
    """RViz showing the camera and every output, or one clear line where rviz2 is not installed."""
    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        launch_logging.get_logger('launch').warning(
            "rviz:=true but package 'rviz2' is not installed: continuing without RViz "
            '(install ros-$ROS_DISTRO-rviz2, or view the topics with rqt_image_view)')
        return []
    config = launch_rviz_config(context)
    return [Node(package='rviz2', executable='rviz2', name='rviz2', arguments=['-d', config], output='screen')]
