"""A user's own class table at its edges: several ignore rows (Cityscapes-style tables mark unlabeled, ego
vehicle, ... each with ``evaluated`` no), a table of nothing but ignore rows, one class, 255 classes."""
from __future__ import annotations

import logging
import struct
import zlib

import cv2
import numpy as np
import pytest

from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import read_class_table
from vidseg_ros.data.datasets.layouts import FrameRecord, read_label_file, write_index

H, W = 24, 32


def _dataset(root):
    """An extracted dataset of one PNG frame, stamp 1000."""
    (root / 'ds' / 'images' / 's').mkdir(parents=True)
    cv2.imwrite(str(root / 'ds' / 'images' / 's' / '0.png'), np.zeros((H, W, 3), np.uint8))
    write_index(root / 'ds', [FrameRecord('s', 0, root / 'ds' / 'images' / 's' / '0.png', None, 1000)])
    return root / 'ds'

TWO_IGNORE = ('id,name,r,g,b,evaluated\n0,unlabeled,0,0,0,no\n1,ego vehicle,10,10,10,no\n'
              '7,road,128,64,128,yes\n8,car,0,0,142,yes\n')


def _import(tmp_path, label, table=TWO_IGNORE, **kw):
    ds = _dataset(tmp_path)
    (tmp_path / 'classes.csv').write_text(table)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / '1000.png'), label)
    import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv', **kw)
    return read_label_file(ds / 'labels' / 's' / '1000.png')


def test_every_ignore_row_of_a_table_is_known(tmp_path):
    t = read_class_table(_write(tmp_path, TWO_IGNORE))
    assert t.names == ['road', 'car'] and t.values == [7, 8]
    assert t.ignore_values == [0, 1] and t.ignore_colors == [(0, 0, 0), (10, 10, 10)]


def test_colour_label_in_any_ignore_rows_colour_is_no_stray_colour(tmp_path, caplog):
    """A label half in the table's first ignore colour was reported as 50% 'in colours not in the class table'
    (only the last ignore row was known), telling the user to add a colour the table has."""
    rgb = np.zeros((H, W, 3), np.uint8)        # (0, 0, 0): the 'unlabeled' row, the first of two ignore rows
    rgb[:8] = (128, 64, 128)
    rgb[8:12] = (10, 10, 10)
    with caplog.at_level(logging.WARNING):
        ids = _import(tmp_path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert 'not in the class table' not in caplog.text
    assert (ids[:8] == 0).all() and (ids[8:] == 255).all()


def test_a_colour_not_in_the_table_still_warns_beside_several_ignore_rows(tmp_path, caplog):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:8] = (128, 64, 128)
    rgb[8:12] = (200, 1, 1)                    # in no row
    with caplog.at_level(logging.WARNING):
        ids = _import(tmp_path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert 'not in the class table' in caplog.text and '(200, 1, 1)' in caplog.text
    assert (ids[8:12] == 255).all()


def test_id_label_holding_any_ignore_rows_id_is_not_warned_about(tmp_path, caplog):
    """Value 0 is the table's 'unlabeled' row; it was warned about as 'no class id', a --map asked for."""
    ids = np.zeros((H, W), np.uint8)
    ids[:8] = 7
    ids[8:12] = 1
    ids[12:14] = 8
    with caplog.at_level(logging.WARNING):
        out = _import(tmp_path, ids)
    assert 'no class id' not in caplog.text
    assert (out[:8] == 0).all() and (out[12:14] == 1).all() and (out[8:12] == 255).all() and (out[14:] == 255).all()


def test_an_id_of_no_row_is_still_warned_about(tmp_path, caplog):
    ids = np.full((H, W), 7, np.uint8)
    ids[:4] = 9                                # no row has id 9
    with caplog.at_level(logging.WARNING):
        out = _import(tmp_path, ids)
    assert 'value(s) 9 ' in caplog.text
    assert (out[:4] == 255).all()


def test_a_table_of_only_ignore_rows_is_refused_by_name(tmp_path):
    """It read as a table of 0 classes; the first colour label then failed with an IndexError."""
    rgb = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match='no class rows'):
        _import(tmp_path, rgb, table='name,r,g,b\nvoid,0,0,0\n')


def test_a_one_class_table(tmp_path, caplog):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:8] = (255, 0, 0)
    ids = _import(tmp_path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), table='name,r,g,b\nvoid,0,0,0\nthing,255,0,0\n')
    assert (ids[:8] == 0).all() and (ids[8:] == 255).all()


def test_a_255_class_table_keeps_254_and_ignores_255(tmp_path):
    """Class ids 0..254 all fit beside ignore 255; stored 254 is the last class, 255 (the void row) ignore."""
    rows = ''.join(f'{i},c{i},{i},{255 - i},{(i * 7) % 256}\n' for i in range(255))
    table = 'id,name,r,g,b\n' + rows + '255,void,255,255,255\n'
    ids = np.zeros((H, W), np.uint8)
    ids[0] = 254
    ids[1] = 255
    ids[2] = 253
    out = _import(tmp_path, ids, table=table)
    assert (out[0] == 254).all() and (out[1] == 255).all() and (out[2] == 253).all() and (out[3:] == 0).all()


def _write(tmp_path, text):
    (tmp_path / 'classes.csv').write_text(text)
    return tmp_path / 'classes.csv'


@pytest.mark.parametrize('header', ['name,r,g\nsky,1,2\n', 'id,r,g,b\n0,1,2,3\n'])
def test_a_table_missing_a_colour_or_the_name_column_is_refused_naming_the_columns(tmp_path, header):
    """A table without b (or without a name column) must say which columns it needs, not fail on a KeyError."""
    with pytest.raises(ValueError, match='need columns name, r, g, b'):
        read_class_table(_write(tmp_path, header))


def _ids_import(tmp_path, write, names='bg,car,sky'):
    ds = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    write(tmp_path / 'lab' / '1000.png')
    import_labels(ds, tmp_path / 'lab', class_names=names.split(','))
    return read_label_file(ds / 'labels' / 's' / '1000.png')


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _paletted_png(path, ids: np.ndarray, palette) -> None:
    """A mode-'P' PNG as PIL writes it (OpenCV cannot write one): 8-bit indices + PLTE of ``palette``."""
    raw = b''.join(b'\x00' + row.tobytes() for row in ids.astype(np.uint8))
    body = _chunk(b'IHDR', struct.pack('>IIBBBBB', ids.shape[1], ids.shape[0], 8, 3, 0, 0, 0))
    body += _chunk(b'PLTE', bytes(v for rgb in palette for v in rgb))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + body + _chunk(b'IDAT', zlib.compress(raw)) + _chunk(b'IEND', b''))


def _palette_ids():
    ids = np.zeros((H, W), np.uint8)
    ids[:8] = 2
    ids[8:12] = 1
    ids[12:14] = 255
    return ids


@pytest.mark.parametrize('palette', [
    [(0, 0, 0), (128, 0, 0), (0, 128, 0)],                          # short (PIL with putpalette of 3 colours)
    [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 253,      # padded with black up to and with 255
    [(0, 0, 0), (128, 0, 0), (128, 0, 0)] + [(0, 0, 0)] * 252 + [(224, 224, 192)],   # two classes one colour
], ids=['short', 'black-padded', 'shared-colour'])
def test_paletted_labels_are_read_by_their_indices_whatever_their_colours(tmp_path, palette):
    """Indices were read back from OpenCV's colours: unlabelled 255 drawn black (padding, or past a short
    palette) became class 0, and the second of two classes sharing a colour became the first, in silence."""
    ids = _ids_import(tmp_path, lambda p: _paletted_png(p, _palette_ids(), palette))
    np.testing.assert_array_equal(ids, _palette_ids())


@pytest.mark.parametrize('palette', [
    [(0, 0, 0), (128, 0, 0), (0, 128, 0)],
    [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 253,
    [(0, 0, 0), (128, 0, 0), (128, 0, 0)] + [(0, 0, 0)] * 252 + [(224, 224, 192)],
], ids=['short', 'black-padded', 'shared-colour'])
@pytest.mark.parametrize('reader', ['training', 'finetune'])
def test_training_and_finetune_read_paletted_labels_as_label_import_does(tmp_path, palette, reader):
    """Label import read the indices (above); training (``read_label_file``) and `vidseg finetune --label` still
    read them back from OpenCV's colours: 255 became class 0, the second class of a shared colour the first."""
    from vidseg_ros.data.datasets.layouts import read_label_file
    from vidseg_ros.tools.finetune import _read_mask
    path = tmp_path / 'label.png'
    _paletted_png(path, _palette_ids(), palette)
    read = read_label_file if reader == 'training' else _read_mask
    np.testing.assert_array_equal(read(path), _palette_ids())


def test_a_class_name_too_long_for_logs_and_yaml_is_refused_naming_the_table(tmp_path):
    with pytest.raises(ValueError, match=r'classes\.csv: .*under 200 characters'):
        read_class_table(_write(tmp_path, 'name,r,g,b\n' + 'x' * 300 + ',1,2,3\nsky,4,5,6\n'))


def test_class_names_at_their_limits(tmp_path):
    """255 classes (ids 0..254) fit beside ignore 255 and 64-character names are names; one more of either is
    refused before anything is written."""
    many = [f'c{i}' for i in range(255)]
    ids = np.zeros((H, W), np.uint8)
    ids[0], ids[1] = 254, 255
    out = _ids_import(tmp_path / 'a', lambda p: cv2.imwrite(str(p), ids), ','.join(many))
    assert (out[0] == 254).all() and (out[1] == 255).all()
    _ids_import(tmp_path / 'b', lambda p: cv2.imwrite(str(p), ids), 'a' * 64 + ',b')
    for folder, names, match in (('c', many + ['one more'], '256 class names'),
                                 ('d', ['a' * 65, 'b'], 'at most 64 characters')):
        ds = _dataset(tmp_path / folder)
        with pytest.raises(ValueError, match=match):
            import_labels(ds, tmp_path, class_names=names)


@pytest.mark.parametrize('ignore', [2, 254])
def test_ignore_index_just_past_the_classes_is_taken(tmp_path, ignore):
    """With classes 0..1, ignore 2 is the first value that is no class; 254 keeps 255 apart as a stored value
    past the classes, which becomes the ignore value too."""
    ds = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    ids = np.zeros((H, W), np.uint8)
    ids[0], ids[1], ids[2] = 1, 2, 255
    cv2.imwrite(str(tmp_path / 'lab' / '1000.png'), ids)
    import_labels(ds, tmp_path / 'lab', class_names=['a', 'b'], ignore_index=ignore)
    out = read_label_file(ds / 'labels' / 's' / '1000.png')
    assert (out[0] == 1).all() and (out[1] == ignore).all() and (out[2] == ignore).all() and (out[3:] == 0).all()


@pytest.mark.parametrize('row', ['sky,256,0,0,0', 'sky,0,256,0,0', 'sky,0,0,0,-1'])
def test_a_class_table_value_past_8_bits_is_refused_naming_the_row(tmp_path, row):
    """Ids and colour components are 0..255 (255 itself is taken: the 255-class table above)."""
    with pytest.raises(ValueError, match='line 2: .* must be an integer 0..255'):
        read_class_table(_write(tmp_path, 'name,id,r,g,b\n' + row + '\n'))


def test_colour_to_id_is_exact_without_a_tolerance():
    """CamVid / Cityscapes colour labels map by exact colour: one value off a class colour is no class."""
    from vidseg_ros.data.datasets.labels import colors_to_ids
    rgb = np.array([[[128, 0, 0], [129, 0, 0], [128, 0, 1], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(colors_to_ids(rgb, [(0, 0, 0), (128, 0, 0)]), [[1, 255, 255, 0]])


def test_colours_taken_within_the_tolerance_are_no_stray_colours(tmp_path, caplog):
    """With --color-tolerance, a shifted class colour is that class, and must not be counted as 'not in the
    class table' (the warning would tell the user to do what they did)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:12] = (128, 64, 128)
    rgb[12:] = (0, 3, 139)                     # 'car' (0, 0, 142), shifted as a JPEG shifts it
    with caplog.at_level(logging.WARNING):
        ids = _import(tmp_path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), color_tolerance=8)
    assert (ids[:12] == 0).all() and (ids[12:] == 1).all()
    assert 'not in the class table' not in caplog.text


def test_ignore_index_is_any_8_bit_value_and_no_other():
    from vidseg_ros.data.datasets.labels import remap_lut
    assert remap_lut(None, None, 0)[7] == 7 and remap_lut(None, 3, 0)[3] == 0      # 0: a mask's background void
    assert remap_lut(None, 3, 255)[3] == 255
    for bad in (-1, 256):
        with pytest.raises(ValueError, match=f'ignore_index {bad}: labels are 8-bit'):
            remap_lut(None, 3, bad)


def test_a_map_without_named_classes_takes_0_to_255_and_no_more():
    from vidseg_ros.data.datasets.labels import remap_lut
    assert remap_lut({1: 255, 255: 0}, None, 254)[[1, 255]].tolist() == [255, 0]
    assert remap_lut({0: 255, 255: 0}, 3, 255)[[0, 255]].tolist() == [255, 0]     # value 0 and class 0 too
    with pytest.raises(ValueError, match=r'--map 1:256: 256 is neither a class id \(0..255\)'):
        remap_lut({1: 256}, None, 255)
    with pytest.raises(ValueError, match='--map 256:1: 256 is not a label value'):
        remap_lut({256: 1}, None, 255)


def test_a_16_bit_id_label_of_256_is_refused_not_wrapped_to_0(tmp_path):
    """16-bit id labels are taken while every value is 0..255 (255: ignore); 256 would wrap to class 0."""
    ids = np.zeros((H, W), np.uint16)
    ids[0] = 255
    ids[1] = 1
    out = _ids_import(tmp_path / 'a', lambda p: cv2.imwrite(str(p), ids))
    assert (out[0] == 255).all() and (out[1] == 1).all()
    ids[2] = 256
    with pytest.raises(ValueError, match=r'label values 0\.\.256 in a uint16 image'):
        _ids_import(tmp_path / 'b', lambda p: cv2.imwrite(str(p), ids))
