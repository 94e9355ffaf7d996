"""`vidseg bench`'s defaults have one home each: the engine's settings in EngineConfig, the frames it times in
``commands_models.bench``; cli.py takes them from ``cli_defaults.DEFAULTS`` (generated from those homes).

--frames' default (30) was written twice, in cli.py and in ``commands_models.bench``: changed in one place,
`vidseg bench` and the library function timed different numbers of frames, and no test noticed.
"""
import inspect

import typer.main

from vidseg_ros.cli import app
from vidseg_ros.tools import cli_defaults, commands_models


def test_every_bench_option_with_a_default_takes_it_from_a_home():
    bench = typer.main.get_command(app).commands['bench']
    homed = cli_defaults.home_defaults('bench')
    given = {p.name: p.default for p in bench.params if p.default is not None}
    assert given and set(given) <= set(homed), f'bench options whose default has no home: {set(given) - set(homed)}'
    assert all(given[name] == homed[name] for name in given)


def test_the_frames_default_is_the_library_function_s():
    frames = inspect.signature(commands_models.bench).parameters['frames'].default
    assert cli_defaults.DEFAULTS['bench']['frames'] == frames == cli_defaults.home_defaults('bench')['frames']
