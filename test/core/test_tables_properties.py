"""Property tests (hypothesis) of the two tables users write or edit by hand: a dataset's index.csv and a
class table (label-import --classes). For ANY text the answer is the records/classes or a ValueError (a
ConfigError is one) naming the file, never a KeyError, IndexError or UnicodeError from deep inside."""
from __future__ import annotations

import csv
import io

from hypothesis import HealthCheck, given, settings, strategies as st

from vidseg_ros.data.datasets.labels import read_class_table
from vidseg_ros.data.datasets.layouts import INDEX_FIELDS, read_index

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
cells = st.one_of(st.text(max_size=12), st.integers(-2**70, 2**70).map(str),
                  st.sampled_from(['', ' ', '1e3', 'nan', '../x.png', 'images/a.png', '\ufeffsequence', '"']))


def _csv(rows) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def _raw(draw):
    """CSV text: the real header (sometimes cut or shuffled) over rows of any cells, or any text at all."""
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    header = list(INDEX_FIELDS)
    if draw(st.booleans()):
        header = draw(st.permutations(header))[:draw(st.integers(0, len(header)))]
    rows = draw(st.lists(st.lists(cells, max_size=len(INDEX_FIELDS) + 2), max_size=5))
    return _csv([header, *rows])


@SETTINGS
@given(text=st.composite(_raw)(), binary=st.booleans())
def test_any_index_text_gives_records_or_an_error_naming_the_file(tmp_path_factory, text, binary):
    root = tmp_path_factory.mktemp('ds')
    path = root / 'index.csv'
    path.write_bytes(text.encode('utf-8') + (b'\xff\xfe' if binary else b''))
    try:
        records = read_index(root)
    except ValueError as e:
        assert str(path) in str(e) or 'index.csv' in str(e)
        return
    assert all(isinstance(r.index, int) and isinstance(r.stamp_ns, int) for r in records)


table_rows = st.lists(st.lists(st.one_of(cells, st.integers(-5, 300).map(str)), max_size=6), max_size=6)


@SETTINGS
@given(header=st.one_of(st.just(['name', 'r', 'g', 'b']), st.just(['id', 'name', 'r', 'g', 'b']),
                        st.lists(cells, max_size=5)),
       rows=table_rows, bom=st.booleans(), tail=st.binary(max_size=3))
def test_any_class_table_gives_classes_or_an_error_naming_the_file(tmp_path_factory, header, rows, bom, tail):
    path = tmp_path_factory.mktemp('cls') / 'classes.csv'
    path.write_bytes((b'\xef\xbb\xbf' if bom else b'') + _csv([header, *rows]).encode() + tail)
    try:
        table = read_class_table(path)
    except ValueError as e:
        assert str(path) in str(e) or 'classes.csv' in str(e)
        return
    assert len(table.names) == len(table.colors) and len(set(table.colors)) == len(table.colors)
