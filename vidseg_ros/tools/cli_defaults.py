"""Defaults of the ``vidseg`` options, generated from their one home so the CLI never restates them.

Each command's options take their defaults from a settings dataclass (``setting(...)``) or, where a
command has no settings group, from the library function it calls; a command with both (bench: the engine's
settings, and the frames its loop times) names both, the first winning where they share a name. Importing those homes would load
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

# command -> the home(s) of its defaults ("module:Class" for a dataclass, "module:function" otherwise)
HOMES = {
    'extract': 'vidseg_ros.data.datasets.extract:ExtractConfig',
    'bag-from-frames': 'vidseg_ros.data.bags.from_frames:BagFromFramesConfig',
    'propagate': 'vidseg_ros.data.labelling.propagate:PropagateConfig',
    'label-import': 'vidseg_ros.data.datasets.label_import:import_labels',
    'make-variant': 'vidseg_ros.data.datasets.variants:make_variant',
    'noise-sigma': 'vidseg_ros.data.datasets.variants:measure_noise_sigma',
    'experiment': 'vidseg_ros.tools.experiment:run_experiment',
    'finetune': 'vidseg_ros.tools.finetune:one_shot',
    'bench': ('vidseg_ros.engine.base:EngineConfig', 'vidseg_ros.tools.commands_models:bench'),
    'eval': 'vidseg_ros.tools.evaluate:run_evaluation',
}

# BEGIN generated
DEFAULTS = {'bag-from-frames': {'compress': False,
                     'encoding': 'rgb8',
                     'frame_id': 'camera',
                     'rate_hz': 15.0,
                     'storage': 'mcap',
                     'topic': '/camera/image_raw'},
 'bench': {'channels_last': False,
           'device': 'auto',
           'frames': 30,
           'input_hw': [],
           'keyframe_interval': 5,
           'model': '',
           'num_threads': 0,
           'precision': 'fp32'},
 'eval': {'clip_len': 0,
          'dataset': 'auto',
          'device': 'cpu',
          'max_frames': 0,
          'out_dir': 'runs/eval',
          'split': 'val'},
 'experiment': {'out_dir': 'runs/experiment', 'total_steps': 200},
 'extract': {'every': 1,
             'image_format': 'png',
             'max_gap_s': 0.5,
             'stamp': 'header',
             'start_s': 0.0,
             'stop_s': 0.0,
             'workers': 1},
 'finetune': {'lr': 0.001, 'steps': 100},
 'label-import': {'color_tolerance': 0,
                  'ignore_index': 255,
                  'match': 'stem',
                  'source': 'human'},
 'make-variant': {'address': '',
                  'copies': 20,
                  'count': 400,
                  'executor': 'local',
                  'n': 1,
                  'seed': 0,
                  'stride': 20,
                  'workers': 1},
 'noise-sigma': {'max_pairs': 50},
 'propagate': {'dis_preset': 'fine',
               'flow': 'dis',
               'flow_scale': 1.0,
               'max_distance': 30,
               'method': 'flow',
               'min_confidence': 0.5,
               'teacher_threshold': 0.7,
               'tracker': 'medianflow'}}
# END generated


def homes(command: str) -> list:
    specs = HOMES[command]
    return [getattr(importlib.import_module(module), name)
            for module, name in (spec.split(':') for spec in ((specs,) if isinstance(specs, str) else specs))]


def home(command: str):
    """The first home of ``command``'s defaults (its settings dataclass, where it has one)."""
    return homes(command)[0]


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_plain(v) for v in value))


def home_defaults(command: str) -> dict:
    """The defaults of ``command``'s homes, read from the code (plain values only; None left out)."""
    out = {}
    for obj in reversed(homes(command)):    # the first home wins
        out.update(_defaults_of(obj))
    return out


def _defaults_of(obj) -> dict:
    if dataclasses.is_dataclass(obj):
        items = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                 for f in dataclasses.fields(obj)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    else:
        items = {n: p.default for n, p in inspect.signature(obj).parameters.items()
                 if p.default is not inspect.Parameter.empty}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items.items() if v is not None and _plain(v)}


def cli_options() -> dict[str, set[str]]:
    """Option names per ``vidseg`` command, read from cli.py's source (importing it needs this file)."""
    import ast
    tree = ast.parse((Path(__file__).parents[1] / 'cli.py').read_text())
    out = {}
    for node in tree.body:
        for dec in getattr(node, 'decorator_list', ()):
            if isinstance(dec, ast.Call) and getattr(dec.func, 'attr', '') == 'command':
                name = dec.args[0].value if dec.args else node.name.replace('_', '-')
                out[name] = {a.arg for a in node.args.args + node.args.kwonlyargs}
    return out


def generate() -> dict:
    """The defaults of the options each command has (a new field elsewhere in a home changes nothing)."""
    options = cli_options()
    return {command: {k: v for k, v in home_defaults(command).items() if k in options[command]}
            for command in sorted(HOMES)}


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
    if check:      # said, as `vidseg docs --check` says it: an exit status alone did not say what to run
        print(f'{path} is stale: run python -m vidseg_ros.tools.cli_defaults', file=sys.stderr)
        return 1
    path.write_text(new)
    return 0


if __name__ == '__main__':
    sys.exit(update('--check' in sys.argv))
