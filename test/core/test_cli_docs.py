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


def documented_shell_commands() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, subcommand, arguments) of every ``vidseg`` command line in a ```bash block, its continued
    lines joined, its comment dropped and optional parts (``[--resume]``) taken as given."""
    import shlex
    found = []
    for path in DOCS:
        lines, block = path.read_text().splitlines(), False
        for i, line in enumerate(lines, 1):
            if line.lstrip().startswith('```'):
                block = line.strip() == '```bash'
                continue
            if not block or lines[i - 2].endswith('\\'):
                continue
            j, text = i, line
            while text.endswith('\\') and j < len(lines):
                text, j = text[:-1] + ' ' + lines[j], j + 1
            lexer = shlex.shlex(text.replace('[', '').replace(']', ''), posix=True, punctuation_chars=';')
            lexer.whitespace_split = True
            words = list(lexer) + [';']
            while ';' in words:         # `vidseg bench M; vidseg info M`: two commands
                cut = words.index(';')
                if cut >= 2 and words[0] == 'vidseg':
                    found.append((path.name, i, words[1], words[2:cut]))
                words = words[cut + 1:]
    return found


SHELL = documented_shell_commands()


def test_the_docs_have_shell_command_lines_to_parse():
    assert len(SHELL) > 30 and {'extract', 'train', 'eval', 'export', 'finetune'} <= {c for _, _, c, _ in SHELL}


def _parse_problem(command: str, args: list[str]) -> str:
    """What the command's own parser finds wrong with ``args`` ('' when nothing): an unknown option, an option
    without its value, a required argument missing, an extra one."""
    import typer
    cmd = COMMANDS[command]
    parser = cmd.make_parser(typer.Context(cmd, info_name=command))
    try:
        opts, extra, _ = parser.parse_args(args=list(args))
    except Exception as e:  # noqa: BLE001 - the parser's own error says what is wrong
        return str(e)
    missing = [p.name for p in cmd.params if p.param_type_name == 'argument' and p.required and opts.get(p.name) is None]
    return f'extra {extra}, missing {missing}' if extra or missing else ''


@pytest.mark.parametrize('where,line,command,args', SHELL, ids=[f'{f}:{n}:{c}' for f, n, c, _ in SHELL])
def test_documented_command_lines_parse(where, line, command, args):
    """Each documented command line parses with the command's own parser: its options take their values, and
    it gives every required argument and no extra one (the flag check above sees flags only)."""
    assert command in COMMANDS, f'{where}:{line}: no command vidseg {command}'
    problem = _parse_problem(command, args)
    assert not problem, f'{where}:{line}: vidseg {command} {" ".join(args)}: {problem}'


def test_the_line_parser_sees_a_wrong_line():
    assert _parse_problem('export', ['m.pt']) == "extra [], missing ['out']"
    assert _parse_problem('eval', ['m.pt', 'data', 'more']) == "extra ['more'], missing []"
    assert _parse_problem('propagate', ['d', '--method']) == "Option '--method' requires an argument."
    assert _parse_problem('export', ['m.pt', 'm.onnx', '--format', 'onnx']) == ''
