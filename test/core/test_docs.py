"""The README's parameter tables are generated from the settings dataclasses and must be current."""
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
