"""Defaults of the ``vidseg`` options, generated from their one home so the CLI never restates them.

Each command's options take their defaults from a settings dataclass (``setting(...)``) or, where a
command has no settings group, from the library function it calls. Importing those homes would load
rosbags, OpenCV and torch for ``vidseg --help``, so their defaults are copied here by
``python -m vidseg_ros.tools.cli_defaults`` (test/core/test_cli_docs.py fails when this file is stale,
as it does for the README tables). Do not edit the block by hand.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pprint
import sys
from pathlib import Path

# command -> the home of its defaults ("module:Class" for a dataclass, "module:function" otherwise)
HOMES = {
    'extract': 'vidseg_ros.data.datasets.extract:ExtractConfig',
    'bag-from-frames': 'vidseg_ros.data.bags.from_frames:BagFromFramesConfig',
    'propagate': 'vidseg_ros.data.labelling.propagate:PropagateConfig',
    'label-import': 'vidseg_ros.data.datasets.labels:import_labels',
    'make-variant': 'vidseg_ros.data.datasets.variants:make_variant',
    'noise-sigma': 'vidseg_ros.data.datasets.variants:measure_noise_sigma',
    'experiment': 'vidseg_ros.tools.experiment:run_experiment',
    'finetune': 'vidseg_ros.tools.finetune:one_shot',
    'bench': 'vidseg_ros.engine.base:EngineConfig',
}

# BEGIN generated
DEFAULTS = {'bag-from-frames': {'camera_info': True,
                     'compress': False,
                     'encoding': 'rgb8',
                     'frame_id': 'camera',
                     'gap_s': 2.0,
                     'jpeg_quality': 95,
                     'rate_hz': 15.0,
                     'start_ns': 1700000000000000000,
                     'storage': 'mcap',
                     'topic': '/camera/image_raw'},
 'bench': {'channels_last': False,
           'compile': False,
           'cuda_graphs': False,
           'device': 'auto',
           'input_hw': [],
           'keyframe_interval': 5,
           'keyframe_max_interval': 30,
           'keyframe_policy': 'fixed',
           'keyframe_threshold': 0.2,
           'max_gap_s': 0.5,
           'model': '',
           'precision': 'fp32',
           'tile_size': 0,
           'tile_stride': 0},
 'experiment': {'out_dir': 'runs/experiment', 'total_steps': 200},
 'extract': {'every': 1,
             'image_format': 'png',
             'jpeg_quality': 95,
             'max_gap_s': 0.5,
             'stamp': 'header',
             'start_s': 0.0,
             'stop_s': 0.0,
             'topics': [],
             'workers': 1},
 'finetune': {'lr': 0.001, 'progress': True, 'seed': 0, 'steps': 100},
 'label-import': {'ignore_index': 255, 'match': 'stem', 'source': 'human'},
 'make-variant': {'address': '',
                  'copies': 20,
                  'count': 400,
                  'executor': 'local',
                  'n': 1,
                  'seed': 0,
                  'stride': 20,
                  'workers': 1},
 'noise-sigma': {'max_pairs': 50},
 'propagate': {'consistency': True,
               'dis_preset': 'fine',
               'flow': 'dis',
               'flow_scale': 1.0,
               'ignore_index': 255,
               'max_distance': 30,
               'method': 'flow',
               'min_confidence': 0.5,
               'teacher_threshold': 0.7,
               'tracker': 'medianflow'}}
# END generated


def home(command: str):
    module, name = HOMES[command].split(':')
    return getattr(importlib.import_module(module), name)


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_plain(v) for v in value))


def home_defaults(command: str) -> dict:
    """The defaults of ``command``'s home, read from the code (plain values only; None left out)."""
    obj = home(command)
    if dataclasses.is_dataclass(obj):
        items = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                 for f in dataclasses.fields(obj)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    else:
        items = {n: p.default for n, p in inspect.signature(obj).parameters.items()
                 if p.default is not inspect.Parameter.empty}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items.items() if v is not None and _plain(v)}


def generate() -> dict:
    return {command: home_defaults(command) for command in sorted(HOMES)}


def block() -> str:
    return 'DEFAULTS = ' + pprint.pformat(generate(), sort_dicts=True) + '\n'


def update(check: bool = False) -> int:
    """Rewrite the generated block (or, with ``check``, return 1 when it is stale)."""
    path = Path(__file__)
    text = path.read_text()
    head, _, rest = text.partition('# BEGIN generated\n')
    _, _, tail = rest.partition('# END generated\n')
    new = head + '# BEGIN generated\n' + block() + '# END generated\n' + tail
    if new == text:
        return 0
    if check:
        return 1
    path.write_text(new)
    return 0


if __name__ == '__main__':
    sys.exit(update('--check' in sys.argv))
