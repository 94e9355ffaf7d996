"""The README's parameter tables are generated from the settings dataclasses and must be current."""
from vidseg_ros.tools import docs


def test_readme_parameter_tables_are_current():
    assert docs.update(check=True) == 0, 'run `vidseg docs` to refresh README.md'


def test_every_settings_block_renders_rows():
    for name, specs in docs.BLOCKS.items():
        table = docs.table(specs)
        assert table.count('\n') > 3, f'{name}: no parameters rendered from {specs}'
