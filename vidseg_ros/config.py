"""Settings as dataclasses, loaded strictly from safe YAML.

One name per setting: the dataclass field is the YAML key, the CLI option and the ROS parameter.
Each field documents itself with ``setting(default, "doc")`` so nodes can declare parameters with
descriptions and the README tables can be generated from the code.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vidseg_ros.files import open_regular

T = TypeVar('T')
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which key and how to fix it."""


CHANGES = ('live', 'rebuild', 'startup')   # how a running node takes a new value of a setting


def setting(default: Any, doc: str, choices: tuple | None = None, range: tuple | None = None,
            lengths: tuple | None = None, renamed_from: tuple[str, ...] = (), change: str = 'live',
            path: bool = False):
    """A dataclass field with a description and its allowed values, for docs, ROS params and checks.

    ``choices``: the allowed values; ``range``: (lowest, highest) allowed, inclusive, for a number or each
    item of a list; ``lengths``: the allowed lengths of a list (e.g. (0, 2) for "empty or [H, W]");
    ``renamed_from``: earlier names of the setting, still read (with a deprecation warning) from old
    YAML files, overrides and checkpoints; ``change``: how a running node takes a new value: ``live`` (at
    the next frame), ``rebuild`` (the engine is built again: model, device...) or ``startup`` (refused at
    run time: set it at start-up); ``path``: the value names a file or folder, and a leading ``~`` in it is
    expanded when it is loaded (``from_dict``), as a shell would (it made a folder named ``~``).
    """
    if change not in CHANGES:
        raise ValueError(f'change must be one of {CHANGES}, got {change!r}')
    meta = {'doc': doc, 'choices': choices, 'range': range, 'lengths': lengths, 'renamed_from': renamed_from,
            'change': change, 'path': path}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields_with(cls, change: str) -> tuple[str, ...]:
    """Names of the settings of ``cls`` whose ``change`` is ``change`` (e.g. the start-up-only ones)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get('change', 'live') == change)


def describe(cls) -> list[dict]:
    """Rows (name, type, default, doc, choices) for every field of a settings dataclass."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({'name': f.name, 'type': _type_name(hints[f.name]), 'default': default,
                     'doc': f.metadata.get('doc', ''), 'choices': f.metadata.get('choices'),
                     'range': f.metadata.get('range'), 'lengths': f.metadata.get('lengths'),
                     'change': f.metadata.get('change', 'live')})
    return rows


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f'list[{_type_name(args[0])}]' if args else 'list'
    return getattr(tp, '__name__', str(tp))


def coerce(value: Any, tp, key: str):
    """Check (and lightly coerce, int->float, tuple->list) one value against a type hint.

    null (None) is a value only of the settings whose type allows it (``int | None``); elsewhere it is
    refused with how to write the empty value, the same for YAML (``key: null``, ``key: ~``, ``key:``)
    and ``--set key=null``: never silently dropped or read as the default.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f'{key}: invalid value {value!r}')
    if value is None and tp is not Any:
        raise ConfigError(f'{key}: null is not a value of this setting; {_empty_value_hint(tp, key)}')
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{key}: expected a list, got {type(value).__name__} {value!r}')
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return [coerce(v, item, f'{key}[{i}]') for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f'{key}: expected a mapping, got {type(value).__name__}')
        _check_text_keys(value, key + '.')      # arch_config: {1: 2} was "keywords must be strings" (exit 1)
        return dict(value)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f'{key}: expected a mapping for {tp.__name__}')
        return from_dict(tp, value, where=key + '.')
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and math.isnan(value):
        raise ConfigError(f'{key}: NaN is not a valid value')
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f'{key}: expected true/false, got {value!r}')
    if tp is int and isinstance(value, bool):
        raise ConfigError(f'{key}: expected an integer, got {value!r}')
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f'{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}')
    return value


def _empty_value_hint(tp, key: str) -> str:
    """How to write the empty value of a setting of type ``tp``, for the message refusing null. A nested key
    (``meta.provenance``, ``arch_config.x``) is no ``--set`` target: only its written form is named."""
    origin = typing.get_origin(tp) or tp
    empty = "''" if tp is str else '[]' if origin in (list, tuple) else '{}' if origin is dict else None
    if empty is None:
        return f'give a value ({_type_name(tp)}), or leave the key out for the default'
    what = {"''": 'an empty text', '[]': 'an empty list', '{}': 'an empty mapping'}[empty]
    cli = '' if '.' in key or '[' in key else f" or --set {key}={'' if empty == chr(39) * 2 else empty}"
    return f'to clear it write {what}: {key}: {empty} (YAML){cli}'


def did_you_mean(word: str, names) -> str:
    """`` (did you mean X?)`` for the closest of ``names`` to a mistyped ``word``, else ''."""
    close = difflib.get_close_matches(word, list(names), n=1)
    return f' (did you mean {close[0]}?)' if close else ''


def current_names(cls, data: dict | None, where: str = '', warn=None, merged: bool = False) -> dict:
    """``data`` with the earlier names of ``cls``'s settings (``setting(renamed_from=...)``) replaced by
    the current ones: the one rule for YAML, CLI overrides, checkpoints and ROS parameters.

    An old name is taken for the current one, with a deprecation warning (``warn``, default this module's
    logger); the old and the current name both given is fine with the same value. With different values:
    within one source (a YAML file, the ``--set`` list) a ConfigError naming both, since neither is the
    obvious choice; in ``merged`` sources (ROS parameters: rclpy merges parameter files and ``-p`` into
    one map, so an old-name file plus a ``-p`` override cannot be told apart) the current name wins and
    the warning names both."""
    warn = warn or log.warning
    data = dict(data or {})
    for f in dataclasses.fields(cls):
        for old in f.metadata.get('renamed_from', ()):
            if old not in data:
                continue
            value = data.pop(old)
            if f.name in data and data[f.name] != value:
                both = (f'{where}{old}={reprlib.repr(value)} and {where}{f.name}={reprlib.repr(data[f.name])} '
                        f'both given; {old} is the old name of {f.name}')
                if not merged:
                    raise ConfigError(f'{both}: keep only {f.name}')
                warn(f'{both}: using {f.name}={reprlib.repr(data[f.name])}')
                continue
            warn(f'setting {where}{old} is deprecated: it is now called {where}{f.name}')
            data.setdefault(f.name, value)
    return data


def _check_text_keys(data: dict, where: str) -> None:
    """Setting names are text: YAML reads ``1: 2`` or ``2020-01-01: x`` as other types, and the unknown-key
    message (``where + key``) was a TypeError, an internal error."""
    bad = [k for k in data if not isinstance(k, str)]      # a list: the key may be 0, None or false
    if bad:
        raise ConfigError(f'{where}{reprlib.repr(bad[0])}: setting names are text, got {type(bad[0]).__name__}')


def from_dict(cls: type[T], data: dict | None, where: str = '') -> T:
    """Build a settings dataclass from a mapping, rejecting unknown keys, wrong types, bad choices."""
    _check_text_keys(data or {}, where)
    data = current_names(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        given = ', '.join(where + u + did_you_mean(u, names) for u in unknown)
        raise ConfigError(f'unknown setting(s) {given}; valid keys: {", ".join(sorted(names))}')
    kwargs = {}
    for key, value in data.items():
        value = coerce(value, hints[key], where + key)
        _check_allowed(value, names[key].metadata, where + key)
        if names[key].metadata.get('path') and isinstance(value, str):
            value = os.path.expanduser(value)
        kwargs[key] = value
    return cls(**kwargs)


def _check_allowed(value, meta: dict, key: str) -> None:
    """The choices / range / lengths declared with ``setting(...)``."""
    choices, rng, lengths = meta.get('choices'), meta.get('range'), meta.get('lengths')
    if choices and value not in choices:
        raise ConfigError(f'{key}: {value!r} is not one of {", ".join(map(repr, choices))}')
    if lengths is not None and isinstance(value, list) and len(value) not in lengths:
        raise ConfigError(f'{key}: {len(value)} values given, expected {" or ".join(map(str, lengths))}')
    if rng is not None:
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, (int, float)) and not rng[0] <= v <= rng[1]:
                raise ConfigError(f'{key}: {v!r} is out of range {rng[0]}..{rng[1]}')


def to_dict(obj) -> dict:
    """Plain dict (lists, not tuples) of a settings dataclass, safe to store in a checkpoint."""
    return dataclasses.asdict(obj)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently) and reads YAML 1.2 exponent floats (``1e-3``, ``5E4``, ``1.0e3``), which PyYAML's YAML 1.1
    resolver leaves as strings. Merge keys (``<<: *base``) still work: only the keys written in the
    mapping itself are compared, the merged ones may be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self._refuse_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        first_line = {}
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first_line.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:   # an unhashable key: construct_mapping says so
                continue
            if line != key_node.start_mark.line + 1:
                raise ConfigError(f'{self.name}: line {key_node.start_mark.line + 1}: key {key!r} is given '
                                  f'twice (first on line {line}); keep one')


# YAML 1.2 floats with an exponent that YAML 1.1 (PyYAML) reads as strings: no dot, or no exponent sign.
StrictLoader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)[eE][-+]?[0-9]+$'), list('-+.0123456789'))


# Bounds of a YAML file this package reads (configs, dataset.yaml, a bag's metadata.yaml, params files): a
# configuration is kilobytes, a few levels deep and a few thousand values. Beyond them PyYAML failed badly: a
# 50 MB scalar took minutes (pure-Python scanner), 10**4 nested brackets raised RecursionError (an internal
# error), and aliases ("billion laughs": 9 anchors of 9 aliases each, 340 bytes) made a value of 9**9 leaves
# whose printing, dumping or traversal never ended.
MAX_YAML_BYTES = 4 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 1_000_000     # values counted with every alias expanded


class BoundedLoader(StrictLoader):
    """``StrictLoader`` that refuses YAML over ``MAX_YAML_DEPTH`` levels, over ``MAX_YAML_VALUES`` values once
    aliases are expanded, or with an alias inside the node it refers to (a cycle), as a ConfigError naming the
    file and line: each node's expanded size is summed from its children's as it is composed, so the check is
    linear in the text, whatever the aliases would expand to."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)      # the anchored node, composed before
            if id(node) not in self._sizes:                  # still being composed: the alias is inside it
                raise ConfigError(f'{self.name}: line {line}: an alias refers to the node it is in (a cycle)')
            return node
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(f'{self.name}: line {line}: nested over {MAX_YAML_DEPTH} levels deep')
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1 if isinstance(node, yaml.ScalarNode) else 1 + sum(self._sizes[id(n)] for n in _children(node))
        if size > MAX_YAML_VALUES:
            raise ConfigError(f'{self.name}: line {line}: over {MAX_YAML_VALUES} values once its aliases are '
                              'expanded (an alias bomb?)')
        self._sizes[id(node)] = size
        return node


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value)


def parse_yaml(text: str | bytes, name: str | Path) -> Any:
    """The data of YAML ``text`` (safe loading, ``BoundedLoader``), the file ``name`` in every error: a
    ConfigError for malformed YAML, a key given twice, bounds exceeded, text that is not UTF-8, a value PyYAML
    cannot convert (an integer of over 4300 digits)."""
    if len(text) > MAX_YAML_BYTES:      # bytes, or characters (each at least one byte)
        raise ConfigError(f'{name}: over {MAX_YAML_BYTES >> 20} MB of YAML, not parsed')
    if isinstance(text, bytes):
        try:
            text = text.decode('utf-8-sig')
        except UnicodeDecodeError as e:
            raise ConfigError(f'{name}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset '
                              f'{e.start}); save it as UTF-8') from None
    try:
        loader = BoundedLoader(text)   # the reader refuses control characters here, before a name can be set
    except yaml.YAMLError as e:
        raise ConfigError(f'{name} is not valid YAML: {str(e).replace("<unicode string>", str(name))}') from e
    loader.name = str(name)       # error marks name the file, not "<unicode string>"
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f'{name} is not valid YAML: {e}') from e
    except ConfigError:
        raise
    except ValueError as e:       # int() of a 5000-digit number (Python's limit of 4300 digits)
        raise ConfigError(f'{name}: {e}') from e
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path, what: str = 'config') -> Any:
    """``parse_yaml`` of regular file ``path``, read no further than ``MAX_YAML_BYTES``."""
    path = Path(path)
    try:
        with open_regular(path, 'rb') as f:   # a FIFO blocked here for good, /dev/zero took 23 GB
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ConfigError(f'cannot read {what} {path}: {e.strerror or e}') from e
    return parse_yaml(data, path)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with ``BoundedLoader`` (safe loading); clear errors, naming the file and line,
    for missing or malformed files, keys given twice and the bounds above."""
    data = read_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping at the top level, got {type(data).__name__}')
    return data


def ros_parameters(data: dict) -> dict:
    """The flat parameters of a ROS 2 params file (``node: {ros__parameters: {...}}``), else ``data``."""
    if len(data) == 1:
        (inner,) = data.values()
        if isinstance(inner, dict) and isinstance(inner.get('ros__parameters'), dict):
            return dict(inner['ros__parameters'])
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict | None = None,
                ignore_unknown: bool = False) -> T:
    """Dataclass from an optional YAML file (plain or ROS params file) plus overrides, validated strictly.

    ``ignore_unknown`` keeps only this dataclass's keys, for files that hold several settings groups
    (the segment node's YAML holds EngineConfig and SegmentNodeConfig keys). A None override is a
    null like one in the file (refused unless the setting allows it; see ``coerce``), not "no override".
    """
    data = current_names(cls, ros_parameters(load_yaml(path)) if path else {})
    if ignore_unknown:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
    data.update(current_names(cls, overrides))
    return from_dict(cls, data)
