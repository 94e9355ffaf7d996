"""Declare ROS parameters from settings dataclasses, read them back into frozen config objects.

The dataclass field is the parameter name, its ``setting(doc=...)`` the description, so YAML, CLI,
ROS parameters and docs cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import typing
import weakref

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from vidseg_ros.config import ConfigError, current_names, from_dict

_ARRAY_TYPES = {int: Parameter.Type.INTEGER_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
                str: Parameter.Type.STRING_ARRAY, bool: Parameter.Type.BOOL_ARRAY}


def _descriptor(f: dataclasses.Field, default) -> ParameterDescriptor:
    """Description and allowed values; a scalar's range goes into the typed range fields, so
    `ros2 param describe` shows it and rclpy refuses out-of-range values (NaN included) itself."""
    meta = f.metadata
    choices, rng, lengths = meta.get('choices'), meta.get('range'), meta.get('lengths')
    constraints = []
    if choices:
        constraints.append(f'one of: {", ".join(map(str, choices))}')
    desc = ParameterDescriptor(description=meta.get('doc', ''))
    if rng is not None:
        if isinstance(default, bool) or isinstance(default, list):
            constraints.append(f'each value in {rng[0]}..{rng[1]}')
        elif isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]))]
        else:
            desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]))]
    if lengths is not None:
        constraints.append(f'{" or ".join(map(str, lengths))} values')
    desc.additional_constraints = '; '.join(constraints)
    return desc


def as_python(value):
    """A parameter value as the settings expect it: rclpy hands arrays over as array.array or
    numpy arrays, the settings take lists."""
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, 'tolist') else value


def declare_settings(node: Node, *classes, read_only: bool = False) -> None:
    """Declare one parameter per field of each settings dataclass, with its default and description.

    ``read_only``: declare the start-up-only settings (``setting(change='startup')``) read-only, for a node
    that never applies them at run time: `ros2 param describe` shows it and rclpy refuses every change
    with the reason. (The segment nodes leave it off: the lifecycle node takes them while inactive.)

    A value given under an earlier name of a setting (``setting(renamed_from=...)``, in a parameter file or
    ``-p``) is taken for the current name, by the rule of :func:`vidseg_ros.config.current_names` for
    merged sources: a deprecation warning; both names with different values, the current name wins (an
    old-name parameter file overridden by ``-p`` under the new name) and the warning names both."""
    _take_empty_arrays(node)
    emptied = set().union(*(_take_untyped_empty_lists(node, cls) for cls in classes))
    # rclpy keeps the --ros-args/params-file values here
    given = {k: as_python(p.value) for k, p in getattr(node, '_parameter_overrides', {}).items()}
    given.update(dict.fromkeys(emptied, []))
    for cls in classes:
        hints = typing.get_type_hints(cls)
        current = current_names(cls, given, warn=node.get_logger().warning, merged=True)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.name in current and f.name not in given:   # given under an old name only
                default = current[f.name]
            if f.name in emptied:
                default = []
            desc = _descriptor(f, default)
            fixed = read_only and f.metadata.get('change') == 'startup'
            if isinstance(default, list) and not default:
                # An empty list carries no element type; declare the typed array so `-p x:=[..]` works,
                # then give it its empty value unless overridden: an uninitialised parameter makes the
                # node's GetParameters answer nothing at all (`ros2 param dump` printed `{}`).
                item = (typing.get_args(hints[f.name]) or (str,))[0]
                kind = _ARRAY_TYPES.get(item, Parameter.Type.STRING_ARRAY)
                node.declare_parameter(f.name, kind, desc)
                try:
                    node.get_parameter(f.name)
                except ParameterUninitializedException:
                    node.set_parameters([Parameter(f.name, kind, [])])
                if fixed:   # only now: a read-only parameter cannot be given its empty value
                    fixed_desc = _descriptor(f, default)   # a new one: rclpy keeps (and checks) the old
                    fixed_desc.type, fixed_desc.read_only = kind.value, True
                    node.set_descriptor(f.name, fixed_desc)
            else:
                desc.read_only = fixed
                node.declare_parameter(f.name, default, desc)


def _take_untyped_empty_lists(node: Node, cls) -> set[str]:
    """The list settings given as ``[]`` in a parameter file, their overrides removed so they are declared as
    typed empty arrays. rcl's YAML parser gives ``[]`` no element type (NOT_SET, None) and rclpy then declared
    the default instead: ``topics: []`` left a recorder meant to record by ``topic_regex`` alone recording
    ``image`` and ``camera_info``."""
    overrides = getattr(node, '_parameter_overrides', {})
    hints = typing.get_type_hints(cls)
    emptied = set()
    for f in dataclasses.fields(cls):
        given = overrides.get(f.name)
        if given is not None and given.type_ == Parameter.Type.NOT_SET and typing.get_origin(hints[f.name]) is list:
            del overrides[f.name]
            emptied.add(f.name)
    return emptied


def _take_empty_arrays(node: Node) -> None:
    """An empty array of any type sets an array parameter to empty. `ros2 param set N x '[]'` and YAML's
    ``[]`` carry no element type (the CLI sends a BOOL_ARRAY), and rclpy refused them as 'Wrong parameter
    type' for a typed array, so a class_remap or an ignore list could not be cleared without a restart."""
    if getattr(node, '_vidseg_empty_arrays', False):
        return
    node._vidseg_empty_arrays = True
    arrays = {*_ARRAY_TYPES.values(), Parameter.Type.BYTE_ARRAY}
    # a weak reference: the node holds this callback, and a cycle kept a node whose constructor failed alive
    # for rclpy's context to destroy half-built at shutdown
    owner = weakref.ref(node)

    def retype(params: list[Parameter]) -> list[Parameter]:
        out, node = [], owner()
        for p in params:
            if node is not None and p.type_ in arrays and len(p.value) == 0 and node.has_parameter(p.name):
                declared = Parameter.Type(node.describe_parameter(p.name).type)
                if declared in arrays and declared != p.type_:
                    p = Parameter(p.name, declared, [])
            out.append(p)
        return out
    node.add_pre_set_parameters_callback(retype)


def _value(node: Node, name: str, default):
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        return default
    return as_python(value)


def read_settings(node: Node, cls, overrides: dict | None = None):
    """Current parameter values -> validated settings dataclass (raises ConfigError when invalid)."""
    data = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        data[f.name] = _value(node, f.name, default)
    for key, value in (overrides or {}).items():
        if key in data:
            data[key] = value
    return from_dict(cls, data)


def validate_changes(node: Node, params: list[Parameter], *classes) -> tuple[SetParametersResult, dict]:
    """Check proposed parameter changes against the settings dataclasses before they are applied."""
    changes = {p.name: as_python(p.value) for p in params}
    try:
        for cls in classes:
            names = {f.name for f in dataclasses.fields(cls)}
            read_settings(node, cls, {k: v for k, v in changes.items() if k in names})
    except ConfigError as e:
        return SetParametersResult(successful=False, reason=str(e)), changes
    return SetParametersResult(successful=True), changes


def unmatched_publishers(node: Node, subscription, type_name: str) -> int:
    """Publishers of ``type_name`` on ``subscription``'s topic that DDS did not match with it (incompatible QoS).
    The graph and the matching are not updated at the same instant: ask only once a mismatch was reported."""
    offered = sum(1 for i in node.get_publishers_info_by_topic(subscription.topic_name) if i.topic_type == type_name)
    return max(offered - subscription.get_publisher_count(), 0)


def keep_last_qos(reliability: str, depth: int) -> QoSProfile:
    """The rclpy QoS of a node's `*_reliability` / `*_depth` settings ('reliable' or 'best_effort'), KEEP_LAST.
    (``data.bags.writer.bag_qos_profile`` is something else: a bag's record of a publisher's QoS.)"""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)),
                      reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT)
