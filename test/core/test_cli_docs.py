"""Docs and CLI in step: every ``vidseg <command> --flag`` written in README.md and docs/*.md exists.

Command lines are taken from code blocks and inline code; each flag must be an option of that
subcommand (as the typer app defines it), and each subcommand must exist.
"""
import re
from pathlib import Path

import pytest
import typer.main

from vidseg_ros.cli import app
from vidseg_ros.tools import cli_defaults
from vidseg_ros.tools.cli_defaults import HOMES

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
COMMAND = re.compile(r'(?<![\w.-])vidseg ([a-z][a-z-]*)([^`\n;#|]*(?:\\\|[^`\n;#|]*)*)')
FLAG = re.compile(r'(?<![\w-])(--[a-z][a-z0-9-]*)')


def documented_commands() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, subcommand, flags) for every ``vidseg ...`` occurrence."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines, 1):
            text = line
            # a shell line continued with a backslash belongs to the same command
            j = i
            while text.endswith('\\') and j < len(lines):
                text = text[:-1] + ' ' + lines[j]
                j += 1
            for m in COMMAND.finditer(text):
                found.append((path.name, i, m.group(1), FLAG.findall(m.group(2))))
    return found


def _options(cmd) -> set[str]:
    opts = {'--help'}
    for p in cmd.params:
        opts.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith('--'))
    return opts


COMMANDS = typer.main.get_command(app).commands
FOUND = documented_commands()


def test_the_docs_have_command_lines_to_check():
    assert len(FOUND) > 30
    assert {c for _, _, c, _ in FOUND} >= {'extract', 'propagate', 'train', 'eval', 'finetune', 'export'}


@pytest.mark.parametrize('where,line,command,flags', FOUND, ids=[f'{f}:{n}:{c}' for f, n, c, _ in FOUND])
def test_documented_flags_exist(where, line, command, flags):
    # words after "vidseg" in prose ("vidseg_ros offline tools", "vidseg CLI") are not commands
    if command not in COMMANDS and not flags:
        pytest.skip(f'"vidseg {command}" is prose')
    assert command in COMMANDS, f'{where}:{line}: no command vidseg {command}'
    missing = [f for f in flags if f not in _options(COMMANDS[command])]
    assert not missing, f'{where}:{line}: vidseg {command} has no option {", ".join(missing)}'


def test_the_checker_sees_a_wrong_flag():
    text = 'vidseg propagate DIR --workers 2 --no-such-flag'
    m = COMMAND.search(text)
    assert m.group(1) == 'propagate'
    assert [f for f in FLAG.findall(m.group(2)) if f not in _options(COMMANDS['propagate'])] == ['--no-such-flag']


@pytest.mark.parametrize('command', sorted(HOMES))
def test_cli_defaults_and_choices_are_the_settings_ones(command):
    """An option named like a field of its settings dataclass (or a parameter of the library function
    the command calls) has that default, and the field's allowed values."""
    import dataclasses
    import typing
    home = cli_defaults.home(command)
    fields = {f.name: f for f in dataclasses.fields(home)} if dataclasses.is_dataclass(home) else {}
    defaults = cli_defaults.home_defaults(command)
    checked = 0
    for p in COMMANDS[command].params:
        if p.name not in defaults or p.default is None:      # None: not given, the home decides
            continue
        default = str(p.default) if isinstance(p.default, Path) else p.default
        assert default == defaults[p.name], \
            f'vidseg {command} --{p.name}: default {p.default!r}, its home {HOMES[command]} says {defaults[p.name]!r}'
        choices = fields[p.name].metadata.get('choices') if p.name in fields else None
        literal = typing.get_args(p.type_descriptor.annotation) if hasattr(p, 'type_descriptor') else ()
        if choices and literal:
            assert tuple(literal) == tuple(choices), f'vidseg {command} --{p.name} choices {literal}'
        checked += 1
    assert checked >= 1


def test_cli_defaults_are_generated_from_their_homes():
    """cli_defaults.py holds what the dataclasses and functions say (python -m vidseg_ros.tools.cli_defaults)."""
    assert cli_defaults.DEFAULTS == cli_defaults.generate(), 'run: python -m vidseg_ros.tools.cli_defaults'
    assert cli_defaults.update(check=True) == 0


@pytest.mark.parametrize('command,function', [
    ('extract', 'commands_data:extract'), ('bag-from-frames', 'commands_data:bag_from_frames'),
    ('propagate', 'commands_data:propagate'), ('label-import', 'commands_data:label_import'),
    ('make-variant', 'commands_data:make_variant'), ('noise-sigma', 'commands_data:noise_sigma'),
    ('experiment', 'commands_train:experiment'), ('finetune', 'commands_train:finetune'),
    ('eval', 'commands_train:evaluate')])
def test_command_functions_restate_no_defaults(command, function):
    """The plain functions behind the commands pass settings through; they keep no copy of a default."""
    import importlib
    import inspect
    module, name = function.split(':')
    fn = getattr(importlib.import_module(f'vidseg_ros.tools.{module}'), name)
    restated = [p for p, v in inspect.signature(fn).parameters.items()
                if v.default is not inspect.Parameter.empty and p in cli_defaults.home_defaults(command)]
    assert not restated, f'{function} restates the default of {restated} (home: {HOMES[command]})'
