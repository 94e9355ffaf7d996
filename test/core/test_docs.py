"""The README's parameter tables are generated from the settings dataclasses and must be current."""
import pytest

from vidseg_ros.tools import docs


def test_readme_parameter_tables_are_current():
    assert docs.update(check=True) == 0, 'run `vidseg docs` to refresh README.md'


def test_every_settings_block_renders_rows():
    for name, specs in docs.BLOCKS.items():
        table = docs.table(specs)
        assert table.count('\n') > 3, f'{name}: no parameters rendered from {specs}'


def test_a_pipe_in_a_setting_text_stays_in_its_cell(monkeypatch):
    """A regex alternative in a description ("a|b") must not end the markdown cell (it was written as "a/b",
    which changed the regex the README showed)."""
    monkeypatch.setattr(docs, '_load', lambda spec: spec)
    monkeypatch.setattr(docs, 'describe', lambda cls: [{'name': 'topic_regex', 'type': 'str', 'default': '',
                                                        'doc': 'e.g. "^/a/|/b$"', 'choices': None}])
    row = docs.table(['x']).splitlines()[-1]
    assert '"^/a/\\|/b$"' in row and row.replace('\\|', '').count('|') == 5


def test_a_settings_class_that_cannot_be_loaded_is_an_error_not_rows_dropped():
    """A class renamed without its BLOCKS entry was skipped: `vidseg docs` rewrote the README without its rows."""
    for spec in ('vidseg_ros.ros.settings:NoSuchConfig', 'vidseg_ros.no_such_module:X'):
        with pytest.raises(ValueError, match=f'docs.BLOCKS names {spec}, which cannot be loaded'):
            docs.table(['vidseg_ros.engine.base:EngineConfig', spec])
