"""Settings of recorder_node (no rclpy import: docs and tests read them).

Each field is a ROS parameter and a key of ``config/recorder.yaml``. Per-topic QoS is not a field:
it uses ROS's own QoS overrides (``qos_overrides./topic.subscription.reliability: best_effort``),
which the node enables on every subscription.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from vidseg_ros.config import setting

# Every recorder setting shapes the bag being written or the subscriptions already made, and none is
# applied at run time: they are start-up only, declared read-only (`ros2 param set` is refused).
startup = functools.partial(setting, change='startup')

# Upper ends of the ranges: far above any real recording, there only so that a range can be declared.
_BYTES = 10**15              # 1 PB: no disk holds more
_RAM_BYTES = 10**12          # 1 TB: bounds of what is held in memory
_SECONDS = 365 * 86400.0     # a year


@dataclass(frozen=True)
class RecorderSettings:
    """What recorder_node records, where, and how."""

    topics: list[str] = startup(['image', 'camera_info'],
                                'Topics to record; relative names resolve in the node namespace and follow '
                                'remapping (e.g. -r image:=/camera/image_raw)')
    topic_regex: str = startup('', 'Also record every topic whose full name matches this regex '
                                   '(re.search) in any namespace: anchor it, e.g. "^/robot1/"; empty = off')
    exclude_regex: str = startup('', 'Never record topics matching this regex, even if listed')
    output_dir: str = startup('~/vidseg_bags', 'Directory where bag folders are created')
    bag_prefix: str = startup('vidseg', 'Bag folder name prefix; the folder is <prefix>_<date-time>, never an '
                                        'existing one')
    storage: str = startup('mcap', 'Storage format (rosbag2 MCAP)', ('mcap',))
    compression: str = startup('none', 'MCAP chunk compression; none keeps up with the fastest cameras',
                               ('none', 'zstd', 'lz4'))
    chunk_size_bytes: int = startup(4 << 20, 'MCAP chunk size; a SIGKILL loses at most the chunk being filled',
                                    range=(4096, 10**9))
    fsync_bytes: int = startup(64 << 20, 'Force written data to disk every this many bytes, bounding what a power '
                                         'loss can take; 0 = only when a file closes', range=(0, _BYTES))
    direct_io: bool = startup(True, 'Write with O_DIRECT where the filesystem allows (far less CPU than the page '
                                    'cache; falls back automatically)')
    max_bag_size_bytes: int = startup(0, 'Start a new file past this size; 0 = no limit', range=(0, _BYTES))
    max_bag_duration_s: float = startup(0.0, 'Start a new file when its messages span this long; 0 = no limit',
                                       range=(0.0, _SECONDS))
    queue_max_bytes: int = startup(1 << 30, 'Bound of the write queue in bytes; messages that do not fit are '
                                            'dropped and counted per topic', range=(10**6, _RAM_BYTES))
    start_paused: bool = startup(False, 'Start paused; call ~/resume to record')
    min_free_disk_bytes: int = startup(1 << 30, 'Leave this much disk free: recording stops (bag closed properly, '
                                                'ERROR diagnostic, exit code 1) before a write would go below it; '
                                                'the space to close the bag is reserved on top; 0 = use the whole '
                                                'disk', range=(0, _BYTES))
    next_output_dirs: list[str] = startup([], 'When the disk of output_dir is nearly full, close the bag properly and '
                                              'go on in a bag of the same name in the next of these directories '
                                              '(other disks); empty = stop recording')
    snapshot_mode: bool = startup(False, 'Keep the newest messages in a RAM ring instead of writing them; '
                                         '~/snapshot writes the buffered window to a new bag')
    snapshot_max_bytes: int = startup(512 << 20, 'Snapshot window bound in bytes (0 = none)', range=(0, _RAM_BYTES))
    snapshot_max_duration_s: float = startup(30.0, 'Snapshot window bound in seconds of receive time (0 = none)',
                                            range=(0.0, _SECONDS))
    discovery_period_s: float = startup(1.0, 'How often to look for new matching topics', range=(0.05, 3600.0))
    # auto, not reliable: most camera drivers publish best effort (sensor-data QoS), which a reliable
    # subscription never matches (nothing recorded); auto is still reliable for every reliable publisher
    input_reliability: str = startup('auto', 'Subscription reliability; auto = reliable unless a publisher '
                                             'only offers best_effort (as ros2 bag record)',
                                     ('reliable', 'best_effort', 'auto'), renamed_from=('qos_reliability',))
    input_depth: int = startup(100, 'Subscription queue depth (deep, so bursts wait in DDS instead of dropping)',
                               range=(1, 10000), renamed_from=('qos_depth',))
    diagnostics_period_s: float = startup(1.0, 'Period of /diagnostics messages', range=(0.05, 3600.0))
