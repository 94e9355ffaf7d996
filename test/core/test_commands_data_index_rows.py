"""`vidseg propagate`'s bar total (``_index_rows``): the index's data rows, counted without parsing, equal to the rows
the index reader reads, whatever the line ends."""
import pytest

from vidseg_ros.data.datasets.layouts import FrameRecord, read_index, write_index
from vidseg_ros.tools.commands_data import _index_rows


@pytest.mark.parametrize('edit', [
    lambda b: b, lambda b: b.replace(b'\r\n', b'\n'), lambda b: b[:-2], lambda b: b.replace(b'\r\n', b'\n')[:-1],
    lambda b: b + b'\r\n', lambda b: b.replace(b'\r\n', b'\n') + b'\n\n',     # blank lines an editor leaves at the end
    lambda b: b.replace(b'\r\n', b'\r\n\r\n', 2)],                              # and one between rows
    ids=['crlf', 'lf', 'crlf-no-last-end', 'lf-no-last-end', 'blank-end', 'two-blank-ends', 'blank-between'])
def test_the_bar_total_is_the_rows_the_index_reader_reads(tmp_path, edit):
    write_index(tmp_path, [FrameRecord('s', i, tmp_path / f'{i}.png', None, i + 1, 'none') for i in range(3)])
    index = tmp_path / 'index.csv'
    index.write_bytes(edit(index.read_bytes()))
    assert _index_rows(tmp_path) == len(read_index(tmp_path)) == 3


def test_an_index_without_rows_or_unreadable_has_no_total(tmp_path):
    assert _index_rows(tmp_path) is None                    # no index.csv
    (tmp_path / 'index.csv').write_bytes(b'sequence,index,stamp_ns,image\r\n\r\n')
    assert _index_rows(tmp_path) is None
    (tmp_path / 'index.csv').write_bytes(b'')
    assert _index_rows(tmp_path) is None
