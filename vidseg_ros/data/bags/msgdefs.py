"""Full ``ros2msg`` message definitions and RIHS01 type hashes, without importing rclpy.

Bags must carry the complete definition of every recorded type (the type followed by each
dependency, rosbag2 style) so that tools without the message packages can decode them.

Source order, best first:

1. The ``.msg`` / ``.json`` files ROS installs under ``<prefix>/share/<pkg>/msg/`` (found through
   ``AMENT_PREFIX_PATH`` and this interpreter's prefix). This is what rosbag2 itself embeds, comments
   included, and it always matches the types the publishers on this machine were built from, custom
   packages too. The ``.json`` type description holds the RIHS01 hash rosidl computed.
2. The ``rosbags`` typestore (standard ROS 2 types), for machines without the share files.
3. Nothing: an empty definition with a warning (rosbag2 does the same); the bag stays playable by ROS.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SEPARATOR = '=' * 80
PRIMITIVES = frozenset({
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16', 'int32',
    'uint32', 'int64', 'uint64', 'string', 'wstring', 'time', 'duration'})
# The .msg files are read when a topic appears: with every descriptor taken (ulimit -n reached) that was 'Too many
# open files' and the recording stopped. One descriptor is held for them, freed for a read that fails for want of one.
_spare: list[int] = []
_spare_lock = threading.Lock()


def _take_spare() -> None:
    try:
        _spare.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        pass    # none left: a later read may fail as before


_take_spare()


def _spared(fn, *args):
    """``fn(*args)``; when it fails for want of a descriptor, once more with the spare one freed."""
    try:
        return fn(*args)
    except OSError as e:
        if e.errno not in (errno.EMFILE, errno.ENFILE) or not _spare:
            raise
    with _spare_lock:
        if _spare:
            os.close(_spare.pop())
        try:
            return fn(*args)
        finally:
            _take_spare()


def _prefixes() -> list[Path]:
    paths = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    paths.append(sys.prefix)
    return [Path(p) for p in dict.fromkeys(paths)]


def _share_file(msgtype: str, suffix: str) -> Path | None:
    pkg, kind, name = split_type(msgtype)
    for prefix in _prefixes():
        path = prefix / 'share' / pkg / kind / f'{name}{suffix}'
        if path.is_file():
            return path
    return None


def split_type(msgtype: str) -> tuple[str, str, str]:
    """``'sensor_msgs/msg/Image'`` (or ``'sensor_msgs/Image'``) -> ``('sensor_msgs', 'msg', 'Image')``."""
    parts = msgtype.split('/')
    if len(parts) == 2:
        return parts[0], 'msg', parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f'bad message type {msgtype!r}; expected "package/msg/Type"')


def _field_types(text: str, pkg: str) -> list[str]:
    """Full names of the non-primitive field types in one ``.msg`` text, in order."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        token = line.split()[0].split('[')[0].split('<=')[0]
        if token in PRIMITIVES:
            continue
        if token == 'Header':  # ROS 1 style shorthand still accepted by rosidl
            found.append('std_msgs/msg/Header')
        elif '/' in token:
            dep_pkg, _, dep_name = split_type(token)
            found.append(f'{dep_pkg}/msg/{dep_name}')
        else:
            found.append(f'{pkg}/msg/{token}')
    return found


def _definition_from_share(msgtype: str) -> str | None:
    path = _share_file(msgtype, '.msg')
    if path is None:
        return None
    texts = {msgtype: _spared(path.read_text)}
    order: list[str] = []
    stack = [msgtype]
    while stack:  # depth-first, each dependency once
        current = stack.pop()
        order.append(current)
        deps = _field_types(texts[current], split_type(current)[0])
        for dep in reversed(deps):
            if dep in texts:
                continue
            dep_path = _share_file(dep, '.msg')
            if dep_path is None:
                log.debug('no .msg for dependency %s of %s', dep, msgtype)
                return None
            texts[dep] = _spared(dep_path.read_text)
            stack.append(dep)
    parts = [texts[msgtype].rstrip('\n') + '\n']
    parts += [f'{SEPARATOR}\nMSG: {dep}\n{texts[dep].rstrip(chr(10))}\n' for dep in order[1:]]
    return ''.join(parts)


def _hash_from_share(msgtype: str) -> str | None:
    path = _share_file(msgtype, '.json')
    if path is None:
        return None
    try:
        hashes = json.loads(_spared(path.read_text)).get('type_hashes', [])
    except (OSError, ValueError):
        return None
    for item in hashes:
        if item.get('type_name') == msgtype:
            return item.get('hash_string')
    return None


@functools.lru_cache(maxsize=None)
def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.LATEST)


@functools.lru_cache(maxsize=256)
def message_definition(msgtype: str) -> tuple[str, str]:
    """Complete ``ros2msg`` definition and RIHS01 hash of a message type.

    Args:
        msgtype: full type name, e.g. ``'sensor_msgs/msg/Image'``.

    Returns:
        ``(definition, type_hash)``; either may be ``''`` when no source knows the type.
    """
    text = _definition_from_share(msgtype)
    type_hash = _hash_from_share(msgtype)
    # any typestore failure means "unknown type"
    if text is None:
        try:
            text = _spared(_typestore).generate_msgdef(msgtype, ros_version=2)[0]   # an import opens files
        except Exception as e:  # noqa: BLE001
            log.warning('no message definition for %s (%s); recording it without one', msgtype, e)
    if not type_hash:   # a custom type installed without its .json (ROS 2 before Iron writes none): no hash
        try:
            type_hash = _spared(_typestore).hash_rihs01(msgtype)
        except Exception as e:  # noqa: BLE001
            log.debug('no type hash for %s (%s)', msgtype, e)
    return text or '', type_hash or ''
