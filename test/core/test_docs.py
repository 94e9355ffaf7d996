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


def _readme(tmp_path, newline: str, body: str = 'stale row') -> 'Path':
    lines = ['# A checkout', '', '<!-- BEGIN segment_params -->', body, '<!-- END segment_params -->', 'after', '']
    path = tmp_path / 'README.md'
    path.write_bytes(newline.join(lines).encode())
    return path


def test_a_crlf_readme_keeps_its_line_endings(tmp_path):
    """A README checked out with CRLF (Windows, git autocrlf) was rewritten whole with LF: every line of it showed
    as changed in the diff. The lines written keep the file's ending, and those outside the tables are unchanged."""
    path = _readme(tmp_path, '\r\n')
    assert docs.update(readme=path) == 0
    data = path.read_bytes()
    assert b'| `keyframe_interval` |' in data
    assert data.count(b'\n') == data.count(b'\r\n') > 10
    assert data.startswith(b'# A checkout\r\n\r\n<!-- BEGIN segment_params -->\r\n| parameter |')
    assert data.endswith(b'|\r\n<!-- END segment_params -->\r\nafter\r\n')


@pytest.mark.parametrize('newline', ['\n', '\r\n'])
def test_check_passes_exactly_when_docs_would_change_nothing(tmp_path, newline):
    """--check read the README with its CRLF folded to LF: it passed a file `vidseg docs` then rewrote whole."""
    current = docs.table(docs.BLOCKS['segment_params']).replace('\n', newline)
    for body in ('stale row', current, current.replace(newline, '\n'), current.replace(newline, '\r\n')):
        path = _readme(tmp_path, newline, body)
        before = path.read_bytes()
        stale = docs.update(check=True, readme=path)
        assert path.read_bytes() == before, '--check wrote'
        docs.update(readme=path)
        assert stale == (path.read_bytes() != before), (newline, body[:30])
        assert docs.update(check=True, readme=path) == 0


def test_a_readme_that_is_not_utf8_is_named(tmp_path):
    """The error was "'utf-8' codec can't decode byte 0xe9 in position 3: ...", naming no file."""
    path = tmp_path / 'README.md'
    path.write_bytes(b'caf\xe9\n<!-- BEGIN segment_params -->\n<!-- END segment_params -->\n')
    with pytest.raises(ValueError, match=f'^{path} is not UTF-8 text \\(byte 3: invalid continuation byte\\)'):
        docs.update(check=True, readme=path)
