"""Checks every ROS process of the package makes as it starts (nodes through ``spin.run``, and the demo).

Standard library only, no rclpy: unit-tested in test/core. Each check returns the words to print (one line),
or nothing when all is well; the caller decides whether it is fatal (exit 2) or a warning.
"""
from __future__ import annotations

import errno
import os
import re
import resource
import xml.etree.ElementTree as ET

MAX_DOMAIN_ID = 232              # FastDDS computes its ports from the domain: above this they overflow
FASTDDS_DEFAULT_SEGMENT = 512 << 10   # FastDDS's own shared-memory segment, when no profile sizes one
PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
SHM_DIR = '/dev/shm'
_LOG_DIR_ADVICE = 'set ROS_LOG_DIR (or ROS_HOME) to a writable folder'
FDS_PER_NODE = 25      # descriptors a segment_node serving one camera holds (measured: 23, flat over 1000 frames)
FDS_ADVISED = 1024     # the usual soft limit: room for cameras, subscribers, bag files


def domain_id_problem(env=os.environ) -> str | None:
    """Why ``ROS_DOMAIN_ID`` cannot be used, or None. rcl rejected 'abc' with a traceback, took -1 without a
    word (running on some other domain) and FastDDS ended the process over 232 ("port number is too high")."""
    text = env.get('ROS_DOMAIN_ID', '')
    if text == '' or (re.fullmatch(r'[0-9]+', text) and int(text) <= MAX_DOMAIN_ID):
        return None
    return (f'ROS_DOMAIN_ID={text[:40]!r} is not a ROS domain: set it to an integer from 0 to {MAX_DOMAIN_ID} '
            '(0-101 is safe everywhere on Linux), or unset it for domain 0')


def init_failure(error: Exception) -> str:
    """One line for an ``rclpy.init`` failure: rcl's own reason without its C source locations, and what to
    do when it is the log folder (HOME unset or read-only: rcl cannot create ~/.ros/log)."""
    reason = re.sub(r', at /\S+:\d+', '', str(error)).strip() or type(error).__name__
    # rcl prints the errno as a bare number ("Failed to create log directory '...': 30")
    reason = re.sub(r"(log directory '.*'): (\d+)$",
                    lambda m: f'{m[1]}: {os.strerror(int(m[2])) if int(m[2]) in errno.errorcode else m[2]}', reason)
    advice = f'; {_LOG_DIR_ADVICE}' if 'logging' in reason or 'log directory' in reason else ''
    return f'cannot start ROS: {reason}{advice}'


def fd_limit_advice(error: BaseException) -> str | None:
    """One line for a start-up that ran out of file descriptors, or None when ``error`` is something else. Under a
    low RLIMIT_NOFILE (22: a container's or unit's ulimit) rcl failed to dlopen FastDDS's type support and said
    "Type support not from this implementation", the 'Too many open files' 400 characters in, cut from the line."""
    if not (isinstance(error, OSError) and error.errno == errno.EMFILE) and os.strerror(errno.EMFILE) not in str(error):
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (f'too many open files: the open-file limit (RLIMIT_NOFILE, ulimit -n) is {soft}, and rclpy, FastDDS and '
            f'the model need more (one camera holds about {FDS_PER_NODE}); raise it to {FDS_ADVISED} or more (ulimit -n, '
            'LimitNOFILE= in a systemd unit, docker run --ulimit nofile=)')


def profile_problem(path: str) -> str | None:
    """Why the FastDDS profile file at ``path`` cannot be used (missing, unreadable, not XML), or None."""
    try:
        ET.parse(path)
    except FileNotFoundError:
        return 'does not exist'
    except OSError as e:
        return f'cannot be read ({e.strerror or e})'
    except ET.ParseError as e:
        return f'is not valid XML ({e})'
    return None


def segment_bytes(path: str | None) -> int:
    """Size of the shared-memory segment each participant maps with the profile at ``path`` (the largest
    SHM transport's ``segment_size``); FastDDS's default when there is none (or no readable profile)."""
    if not path or profile_problem(path):
        return FASTDDS_DEFAULT_SEGMENT
    sizes = []
    for desc in ET.parse(path).getroot().iter():
        if _local(desc.tag) != 'transport_descriptor':
            continue
        fields = {_local(child.tag): (child.text or '').strip() for child in desc}
        if fields.get('type') == 'SHM':
            sizes.append(int(fields['segment_size']) if fields.get('segment_size', '').isdigit()
                         else FASTDDS_DEFAULT_SEGMENT)
    return max(sizes, default=FASTDDS_DEFAULT_SEGMENT)


def _local(tag) -> str:
    """An element's name without its XML namespace."""
    return tag.rsplit('}', 1)[-1] if isinstance(tag, str) else ''


def transport_warnings(env=os.environ, shm_dir: str = SHM_DIR) -> list[str]:
    """Why large images (camera frames) would be lost between processes, in our words: FastDDS itself says
    only "XMLPARSER Error" or "Unable to Register SHM Transport" and then goes on, dropping every frame larger
    than its fallback can carry. Empty when FastDDS is not the middleware or all is well."""
    if not env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp').startswith('rmw_fastrtps'):
        return []
    warnings = []
    path = env.get(PROFILE_ENV) or None
    if path and (problem := profile_problem(path)):
        warnings.append(f'{PROFILE_ENV}={path} {problem}: FastDDS falls back to its 512 KB shared-memory segment '
                        "and large images will be lost; point it at vidseg_ros's config/fastdds_shm.xml "
                        '(under share/vidseg_ros/ when installed)')
    need = segment_bytes(path)
    try:
        st = os.statvfs(shm_dir)
    except OSError:
        return warnings     # no /dev/shm at all: FastDDS says so, and uses UDP
    free = st.f_bavail * st.f_frsize
    if free < need:
        warnings.append(f'{shm_dir} has {free / 2**20:.1f} MiB free, less than the {need / 2**20:.1f} MiB '
                        'shared-memory segment FastDDS needs for this process: large images will be lost; '
                        f'free space in {shm_dir} (stale fastdds_* files of dead processes, other programs) or '
                        'enlarge it (docker run --shm-size=1g)')
    return warnings
