"""Label import: id PNGs with remapping, colour PNGs with a class table, layouts, dataset index updates."""
import cv2
import numpy as np
import pytest

from vidseg_ros.training.datasets import FrameDataset
from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.label_import import import_labels, import_layout
from vidseg_ros.data.datasets.labels import colors_to_ids, ids_to_colors, read_class_table, remap_lut
from vidseg_ros.data.datasets.layouts import extracted_source, read_index, read_meta

TABLE = 'label_value,class_name,r,g,b,evaluated\n0,Sky,128,128,128,yes\n1,Road,128,64,128,yes\n' \
        '2,Car,64,0,128,yes\n11,Unlabelled,0,0,0,no\n'


def _dataset(tmp_path, n=4, hw=(24, 32)):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for _ in range(n)]
    write_bag(tmp_path / 'bag', [frames])
    extract([tmp_path / 'bag'], tmp_path / 'ds')
    return tmp_path / 'ds', read_index(tmp_path / 'ds')


def test_class_table_and_colour_roundtrip(tmp_path):
    (tmp_path / 'classes.csv').write_text(TABLE)
    t = read_class_table(tmp_path / 'classes.csv')
    assert t.names == ['Sky', 'Road', 'Car'] and t.values == [0, 1, 2] and t.ignore_value == 11
    ids = np.array([[0, 1], [2, 255]], np.uint8)
    rgb = ids_to_colors(ids, t.colors, ignore_color=(1, 2, 3))
    assert np.array_equal(colors_to_ids(rgb, t.colors), ids)


def test_class_table_written_by_excel_with_a_bom_is_read(tmp_path):
    (tmp_path / 'classes.csv').write_bytes('\ufeffname,r,g,b\nroad,10,20,30\ncar,1,2,3\n'.encode('utf-8'))
    t = read_class_table(tmp_path / 'classes.csv')
    assert t.names == ['road', 'car'] and t.colors == [(10, 20, 30), (1, 2, 3)]


@pytest.mark.parametrize('text, match', [
    ('name,r,g,b\nroad,10,20,30\ncar,10,20,30\n', "line 3: 'car' has the colour \\(10, 20, 30\\) of 'road'"),
    ('name,r,g,b\nroad,0,0,0\nvoid,0,0,0\n', "'void' has the colour"),       # the ignore colour too
    ('id,name,r,g,b\n1,road,1,2,3\n1,car,4,5,6\n', "'car' has the id 1 of 'road'"),
    ('name,r,g,b\nroad,300,20,30\n', "line 2: r must be an integer 0..255, got '300'"),
    ('name,r,g,b\nroad,-1,20,30\n', 'r must be an integer 0..255'),
    ('id,name,r,g,b\n300,road,10,20,30\n', 'id must be an integer 0..255'),
    ('name,r,g,b\nroad,10,20\n', 'b must be an integer 0..255, got nothing'),
    ('name,r,g,b\nroad,ten,20,30\n', "got 'ten'"),
])
def test_bad_class_table_is_refused_naming_the_row(tmp_path, text, match):
    (tmp_path / 'classes.csv').write_text(text)
    with pytest.raises(ValueError, match=match):
        read_class_table(tmp_path / 'classes.csv')


def test_bad_class_table_is_a_user_error_on_the_cli_and_writes_nothing(tmp_path):
    """Ids over 255 and short rows were IndexError / TypeError: 'internal error' (exit 1)."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.zeros((24, 32), np.uint8))
    before = (ds / 'index.csv').read_bytes()
    for text in ('id,name,r,g,b\n300,road,10,20,30\n', 'name,r,g,b\nroad,10,20\n'):
        (tmp_path / 'classes.csv').write_text(text)
        res = CliRunner().invoke(app, ['label-import', str(ds), str(tmp_path / 'lab'), '--classes',
                                       str(tmp_path / 'classes.csv')])
        assert res.exit_code == 2 and 'must be an integer 0..255' in res.output, res.output
    assert (ds / 'index.csv').read_bytes() == before and not (ds / 'labels').exists()


def test_remap_lut():
    lut = remap_lut({255: 1}, num_classes=2, ignore_index=255)
    assert lut[0] == 0 and lut[1] == 1 and lut[7] == 255 and lut[255] == 1
    assert remap_lut({7: 255}, num_classes=2)[7] == 255          # to the ignore value: allowed


@pytest.mark.parametrize('mapping, ignore, match', [
    ({-1: 0}, 255, '-1 is not a label value'),          # lut[-1] is lut[255]: ignore became class 0
    ({300: 1}, 255, '300 is not a label value'),
    ({2: 7}, 255, r'7 is neither a class id \(0..2\) nor the ignore value 255'),
    ({1: 300}, 255, '300 is neither a class id'),
    ({1: -1}, 255, '-1 is neither a class id'),
    (None, 300, 'ignore_index 300: labels are 8-bit'),
    (None, -1, 'ignore_index -1: labels are 8-bit'),
])
def test_bad_map_or_ignore_value_is_refused_before_anything_is_written(tmp_path, mapping, ignore, match):
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.full((24, 32), 2, np.uint8))
    before = (ds / 'index.csv').read_bytes()
    with pytest.raises(ValueError, match=match):
        import_labels(ds, tmp_path / 'lab', class_names=['a', 'b', 'c'], mapping=mapping, ignore_index=ignore)
    assert (ds / 'index.csv').read_bytes() == before and not (ds / 'labels').exists()


@pytest.mark.parametrize('args', [['--map', '300:1'], ['--map', '1:300'], ['--ignore-index', '300']])
def test_out_of_range_map_and_ignore_index_are_user_errors_on_the_cli(tmp_path, args):
    """They were IndexError / OverflowError: 'internal error, please report it' and exit 1."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.zeros((24, 32), np.uint8))
    res = CliRunner().invoke(app, ['label-import', str(ds), str(tmp_path / 'lab'), '--class-names', 'a,b,c', *args])
    assert res.exit_code == 2 and 'internal error' not in res.output and '300' in res.output, res.output


def test_import_id_labels_by_stamp_with_mapping(tmp_path):
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 5:10] = 255
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[2].stamp_ns}.png'), mask)
    cv2.imwrite(str(tmp_path / 'lab' / '123.png'), mask)    # matches nothing
    res = import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'], mapping={255: 1})
    assert res == {'imported': 1, 'unmatched': 1, 'frames': 4}
    after = read_index(ds)
    assert [r.label_source for r in after] == ['none', 'none', 'human', 'none']
    lab = cv2.imread(str(after[2].label), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(lab)) == {0, 1} and lab[7, 7] == 1
    assert read_meta(ds)['classes'] == ['bg', 'obj']
    sample = FrameDataset(extracted_source(ds), train=False)[0]
    assert sample['label'].max() == 1


def test_a_bad_label_late_in_the_folder_leaves_the_earlier_import_as_it_was(tmp_path):
    """Labels were written one by one: a file that failed to load overwrote nothing after it but every
    label before it, while the index (unchanged) still described the earlier import."""
    ds, recs = _dataset(tmp_path)
    first, second = tmp_path / 'first', tmp_path / 'second'
    first.mkdir(), second.mkdir()
    ones = np.ones((24, 32), np.uint8)
    for r in recs[:2]:
        cv2.imwrite(str(first / f'{r.stamp_ns}.png'), ones)
    import_labels(ds, first, class_names=['bg', 'obj'])
    before = {p: p.read_bytes() for p in (ds / 'labels').rglob('*') if p.is_file()}
    cv2.imwrite(str(second / f'{recs[0].stamp_ns}.png'), np.zeros((24, 32), np.uint8))
    cv2.imwrite(str(second / f'{recs[1].stamp_ns}.png'), np.full((24, 32), 300, np.uint16))   # not 8-bit ids: refused
    cv2.imwrite(str(second / f'{recs[3].stamp_ns}.png'), np.zeros((24, 32), np.uint8))
    with pytest.raises(ValueError, match='label values 300..300 in a uint16 image'):
        import_labels(ds, second, class_names=['bg', 'obj'])
    assert {p: p.read_bytes() for p in (ds / 'labels').rglob('*') if p.is_file()} == before
    assert [r.label_source for r in read_index(ds)] == ['human', 'human', 'none', 'none']


@pytest.mark.parametrize('fails', ['label', 'index'])
def test_a_full_disk_leaves_the_earlier_import_as_it_was(tmp_path, fails):
    """cv2.imwrite returned True over a truncated label (file size limit, full disk): every label of the earlier
    import was replaced by an unreadable file; and labels moved into place before a failed index write."""
    import errno

    from support.disk import file_size_limit
    hw = (96, 128) if fails == 'label' else (24, 32)        # noise labels of ~2 kB, or ~80-byte ones
    ds, recs = _dataset(tmp_path, hw=hw)
    rng = np.random.default_rng(1)
    first, second = tmp_path / 'first', tmp_path / 'second'
    first.mkdir(), second.mkdir()
    for r in recs:
        cv2.imwrite(str(first / f'{r.stamp_ns}.png'), rng.integers(0, 2, hw, dtype=np.uint8))
        cv2.imwrite(str(second / f'{r.stamp_ns}.png'), rng.integers(0, 2, hw, dtype=np.uint8) if fails == 'label'
                    else np.ones(hw, np.uint8))
    import_labels(ds, first, class_names=['bg', 'obj'])
    before = {p: p.read_bytes() for p in ds.rglob('*') if p.is_file()}
    with file_size_limit(1000 if fails == 'label' else 400), pytest.raises(OSError) as err:
        import_labels(ds, second, class_names=['bg', 'obj'])
    assert err.value.errno == errno.EFBIG
    assert {p: p.read_bytes() for p in ds.rglob('*') if p.is_file()} == before


def test_a_failed_first_import_leaves_no_labels_folder(tmp_path):
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.zeros((24, 32), np.uint8))
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[1].stamp_ns}.png'), np.full((24, 32, 3), (255, 0, 0), np.uint8))  # colour
    with pytest.raises(ValueError, match='colour image'):
        import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'])
    assert not (ds / 'labels').exists()


def test_import_colour_labels_by_order(tmp_path):
    ds, recs = _dataset(tmp_path, n=2)
    (tmp_path / 'classes.csv').write_text(TABLE)
    (tmp_path / 'lab').mkdir()
    rgb = np.zeros((24, 32, 3), np.uint8)          # black = Unlabelled -> ignore
    rgb[:12] = (128, 128, 128)
    rgb[12:, :8] = (64, 0, 128)
    for i in range(2):
        cv2.imwrite(str(tmp_path / 'lab' / f'f{i}.png'), rgb[:, :, ::-1])
    import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv', match='order')
    lab = cv2.imread(str(read_index(ds)[1].label), cv2.IMREAD_UNCHANGED)
    assert lab[0, 0] == 0 and lab[20, 2] == 2 and lab[20, 20] == 255
    assert read_meta(ds)['colors'][2] == [64, 0, 128]



def test_hidden_label_files_are_not_labels(tmp_path):
    """A macOS ``._f0.png`` beside each label (copied via a USB disk) was a label: by order it took frame 0 and
    failed as unreadable; a ``.git`` folder's PNGs were labels too."""
    ds, recs = _dataset(tmp_path, n=2)
    (tmp_path / 'lab' / '.git').mkdir(parents=True)
    mask = np.zeros((24, 32), np.uint8)
    mask[:, 16:] = 1
    for i in range(2):
        cv2.imwrite(str(tmp_path / 'lab' / f'f{i}.png'), mask)
        (tmp_path / 'lab' / f'._f{i}.png').write_bytes(b'\x00\x05\x16\x07 Mac OS X resource fork')
    cv2.imwrite(str(tmp_path / 'lab' / '.git' / 'a.png'), mask)
    res = import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'], match='order')
    assert res == {'imported': 2, 'unmatched': 0, 'frames': 2}

def test_colour_label_without_table_is_clear(tmp_path):
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.full((24, 32, 3), (255, 0, 0), np.uint8))
    with pytest.raises(ValueError, match='class table'):
        import_labels(ds, tmp_path / 'lab')


@pytest.mark.parametrize('what, match', [('missing', 'not a folder with label PNGs'),
                                         ('empty', 'not a folder with label PNGs'),
                                         ('unmatched', 'is named like a frame')])
def test_a_label_folder_that_imports_nothing_is_refused_before_anything_is_written(tmp_path, what, match):
    """The checks live in import_labels itself (the CLI had its own copy): the Python API refuses too."""
    ds, _ = _dataset(tmp_path, n=2)
    before = (read_meta(ds), (ds / 'index.csv').read_bytes())
    lab = tmp_path / 'lab'
    if what != 'missing':
        lab.mkdir()
    if what == 'unmatched':
        cv2.imwrite(str(lab / '123.png'), np.zeros((24, 32), np.uint8))
    with pytest.raises((FileNotFoundError, ValueError), match=match):
        import_labels(ds, lab, class_names=['bg', 'obj'])
    assert (read_meta(ds), (ds / 'index.csv').read_bytes()) == before


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_a_label_of_another_size_than_its_frame_is_refused_naming_both(tmp_path, ext):
    """It was imported, then propagate failed with 'cannot reshape array' and eval with 'sizes differ'."""
    ds, recs = _dataset(tmp_path, n=2)
    if ext == '.jpg':       # frames kept as JPEG (extract --image-format jpg): the size comes from its header
        for r in recs:
            cv2.imwrite(str(r.image), cv2.imread(str(r.image)))   # same name, JPEG bytes
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.zeros((24, 32), np.uint8))
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[1].stamp_ns}.png'), np.zeros((10, 10), np.uint8))
    before = (ds / 'index.csv').read_bytes()
    with pytest.raises(ValueError, match=rf'label .*{recs[1].stamp_ns}.png is 10x10 but its frame .* is 32x24'):
        import_labels(ds, tmp_path / 'lab', class_names=['a', 'b'])
    assert (ds / 'index.csv').read_bytes() == before and not (ds / 'labels').exists()


def test_label_import_command_names_the_classes_matches_by_order_and_keeps_the_licence(tmp_path):
    """The docs' form: `vidseg label-import DS LABELS --class-names background,object --match order`."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    ds, recs = _dataset(tmp_path, n=3)
    (tmp_path / 'lab').mkdir()
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 4:12] = 1
    mask[0, :] = 7                                  # no such class: becomes ignore
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / 'lab' / name), mask)
    res = CliRunner().invoke(app, ['label-import', str(ds), str(tmp_path / 'lab'), '--class-names',
                                   'background, object', '--match', 'order', '--licence', 'CC0 (ours)'])
    assert res.exit_code == 0, res.output
    meta = read_meta(ds)
    assert meta['classes'] == ['background', 'object'] and meta['licence'] == 'CC0 (ours)'
    after = read_index(ds)
    assert [r.label_source for r in after] == ['human', 'human', 'none']
    lab = cv2.imread(str(after[1].label), cv2.IMREAD_UNCHANGED)
    assert lab[5, 5] == 1 and lab[20, 20] == 0 and lab[0, 3] == 255


def test_class_table_names_and_colours_id_pngs(tmp_path):
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'classes.csv').write_text('name,r,g,b\nground,10,20,30\nrobot,250,0,0\n')
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.ones((24, 32), np.uint8))
    import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv')
    meta = read_meta(ds)
    assert meta['classes'] == ['ground', 'robot'] and meta['colors'] == [[10, 20, 30], [250, 0, 0]]
    assert cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED).max() == 1


@pytest.mark.parametrize('kw, match', [
    (dict(class_names=['a', 'a']), 'distinct'),
    (dict(class_names=['a', '']), 'non-empty'),
    (dict(class_names=['a', 'b'], ignore_index=1), 'ignore_index 1 is a class id'),
    (dict(class_names=['a', 'b'], classes='x.csv'), 'not both'),
])
def test_bad_class_names_are_clear(tmp_path, kw, match):
    ds, _ = _dataset(tmp_path, n=1)
    with pytest.raises(ValueError, match=match):
        import_labels(ds, tmp_path, **kw)


def test_import_layout_davis(tmp_path, davis_dir):
    res = import_layout(davis_dir, tmp_path / 'd', 'davis', sequences=['car-shadow'])
    assert res['frames'] == res['labelled'] == 40
    src = extracted_source(tmp_path / 'd')
    assert src.class_names == ['background', 'object']
    assert 'DAVIS 2016' in read_meta(tmp_path / 'd')['licence']
    lab = src.read_label(src.records[0])
    assert set(np.unique(lab)) <= {0, 1}


def test_import_layout_refuses_an_existing_dataset_and_its_own_source(tmp_path, davis_dir):
    """`label-import --layout camvid SRC --out DS` replaced an existing dataset's index.csv and dataset.yaml."""
    ds, _ = _dataset(tmp_path, n=2)
    before = [(ds / n).read_bytes() for n in ('index.csv', 'dataset.yaml')]
    with pytest.raises(ValueError, match='already holds a dataset'):
        import_layout(davis_dir, ds, 'davis', sequences=['car-shadow'])
    assert [(ds / n).read_bytes() for n in ('index.csv', 'dataset.yaml')] == before
    for out in (davis_dir, davis_dir / 'out'):
        with pytest.raises(ValueError, match=r'is \(inside\) the source'):
            import_layout(davis_dir, out, 'davis', sequences=['car-shadow'])
    assert not (davis_dir / 'out').exists() and not (davis_dir / 'index.csv').exists()


def test_cityscapes_layout(tmp_path):
    from vidseg_ros.data.datasets.public_layouts import cityscapes_source
    root = tmp_path / 'cs'
    img_dir = root / 'leftImg8bit' / 'val' / 'bonn'
    lab_dir = root / 'gtFine' / 'val' / 'bonn'
    img_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / 'bonn_000001_000019_leftImg8bit.png'), np.zeros((8, 16, 3), np.uint8))
    lab = np.full((8, 16), 255, np.uint8)
    lab[:, :4] = 13
    cv2.imwrite(str(lab_dir / 'bonn_000001_000019_gtFine_labelTrainIds.png'), lab)
    src = cityscapes_source(root, 'val')
    assert src.num_classes == 19 and src.records[0].sequence == 'bonn_000001'
    assert src.records[0].index == 19
    got = src.read_label(src.records[0])
    assert got[0, 0] == 13 and got[0, 10] == 255
    res = import_layout(root, tmp_path / 'ds', 'cityscapes', split='val')
    assert res == {'frames': 1, 'labelled': 1}


def _png(path, pixels, color_type, palette=None):
    """A PNG of ``color_type`` (3 paletted, 4 grey+alpha) written by hand: OpenCV writes neither."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
    h, w = pixels.shape[:2]
    raw = b''.join(b'\x00' + pixels[y].tobytes() for y in range(h))
    body = chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, color_type, 0, 0, 0))
    if palette is not None:
        body += chunk(b'PLTE', bytes(v for rgb in palette for v in rgb))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + body + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def _square(value=1, background=0):
    mask = np.full((24, 32), background, np.uint8)
    mask[4:12, 4:12] = value
    return mask


def test_label_files_pair_with_frames_in_number_order(tmp_path):
    """label_0 .. label_11 were string-sorted (label_1, label_10, label_11, label_2, ...): 10 of 12 frames got
    another frame's label."""
    ds, recs = _dataset(tmp_path, n=12)
    (tmp_path / 'lab').mkdir()
    for i in range(12):
        mask = np.zeros((24, 32), np.uint8)
        mask[:, i] = 1                          # label i marks column i
        cv2.imwrite(str(tmp_path / 'lab' / f'label_{i}.png'), mask)
    import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'], match='order')
    got = [int(np.argmax(cv2.imread(str(r.label), cv2.IMREAD_UNCHANGED)[0])) for r in read_index(ds)]
    assert got == list(range(12))


@pytest.mark.parametrize('names', [('A.PNG', 'B.PNG'), ('A.png', 'B.PNG')])
def test_label_pngs_with_an_upper_case_suffix_are_imported(tmp_path, names):
    """A folder of .PNG files was 'not a folder with label PNGs'; mixed with .png they were skipped silently."""
    ds, recs = _dataset(tmp_path, n=2)
    (tmp_path / 'lab').mkdir()
    for rec, name in zip(recs, names):
        cv2.imwrite(str(tmp_path / 'lab' / f'{rec.stamp_ns}.png'), _square())
        (tmp_path / 'lab' / f'{rec.stamp_ns}.png').rename(tmp_path / 'lab' / f'{rec.stamp_ns}{name[1:]}')
    res = import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'])
    assert res == {'imported': 2, 'unmatched': 0, 'frames': 2}
    assert all(r.label_source == 'human' for r in read_index(ds))


def test_many_colours_not_in_the_table_are_one_warning_naming_the_worst_label(tmp_path, caplog):
    """JPEG-saved colour labels: 'Car' (64, 0, 128) came out as (65, 1, 127) and so on, so every Car pixel
    became ignore and the class vanished, exit 0 without a word."""
    ds, recs = _dataset(tmp_path, n=3)
    (tmp_path / 'classes.csv').write_text(TABLE)
    (tmp_path / 'lab').mkdir()
    rgb = np.zeros((24, 32, 3), np.uint8)          # black: the table's Unlabelled row, a known colour
    rgb[:12] = (128, 128, 128)
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), rgb[:, :, ::-1])   # clean
    for rec, rows in ((recs[1], 3), (recs[2], 5)):
        shifted = rgb.copy()
        shifted[12:12 + rows, :8] = (65, 1, 127)     # 'Car', shifted by lossy compression
        cv2.imwrite(str(tmp_path / 'lab' / f'{rec.stamp_ns}.png'), shifted[:, :, ::-1])
    with caplog.at_level('WARNING', logger='vidseg_ros.data.datasets.label_import'):
        import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv')
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert len(warnings) == 1, warnings
    assert ('2 of 3 colour label(s)' in warnings[0] and f'{recs[2].stamp_ns}.png, 5.2%' in warnings[0]
            and '(65, 1, 127)' in warnings[0] and 'JPEG' in warnings[0]
            and "'Road', 'Car' got no pixel" in warnings[0]), warnings[0]
    lab = cv2.imread(str(read_index(ds)[2].label), cv2.IMREAD_UNCHANGED)
    assert lab[13, 2] == 255 and lab[0, 0] == 0          # still ignore, as documented


def test_clean_colour_labels_and_the_ignore_colour_give_no_warning(tmp_path, caplog):
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'classes.csv').write_text(TABLE)
    (tmp_path / 'lab').mkdir()
    rgb = np.zeros((24, 32, 3), np.uint8)          # mostly Unlabelled (0, 0, 0): ignore, not a stray colour
    rgb[:2] = (128, 128, 128)
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), rgb[:, :, ::-1])
    with caplog.at_level('WARNING', logger='vidseg_ros.data.datasets.label_import'):
        import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv')
    assert not [r for r in caplog.records if r.levelname == 'WARNING']


def test_16_bit_colour_labels_are_read_when_exact_and_refused_otherwise(tmp_path):
    """16-bit colours matched no table colour: every class pixel became ignore, exit 0."""
    from vidseg_ros.data.datasets.labels import load_label
    t_colors = [(128, 128, 128), (128, 64, 128), (64, 0, 128)]
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:12] = (128, 128, 128)
    rgb[12:, :8] = (64, 0, 128)
    cv2.imwrite(str(tmp_path / 'exact.png'), rgb[:, :, ::-1].astype(np.uint16) * 257)
    assert np.array_equal(load_label(tmp_path / 'exact.png', colors=t_colors),
                          load_label(_write(tmp_path / 'eight.png', rgb[:, :, ::-1]), colors=t_colors))
    cv2.imwrite(str(tmp_path / 'deep.png'), rgb[:, :, ::-1].astype(np.uint16) * 256)
    with pytest.raises(ValueError, match='16-bit colour label whose values are not 8-bit colours'):
        load_label(tmp_path / 'deep.png', colors=t_colors)


def _write(path, img):
    cv2.imwrite(str(path), img)
    return path


def test_transparent_pixels_are_ignore_whatever_colour_or_id_they_hide(tmp_path):
    """The alpha channel was dropped: transparent pixels hiding a class colour became that class."""
    from vidseg_ros.data.datasets.labels import load_label
    bgra = np.zeros((24, 32, 4), np.uint8)
    bgra[..., 3] = 255
    bgra[:, :16, :3] = (128, 0, 64)                 # (64, 0, 128) as BGR: class 2
    bgra[:8, :, 3] = 0                              # transparent: hides class 2 on the left
    bgra[8:12, :, 3] = 128                          # half transparent: keeps its colour
    lab = load_label(_write(tmp_path / 'rgba.png', bgra), colors=[(128, 128, 128), (128, 64, 128), (64, 0, 128)])
    assert (lab[:8] == 255).all() and (lab[8:, :16] == 2).all() and (lab[8:, 16:] == 255).all()
    grey_alpha = np.dstack([_square(1, 0), np.where(np.arange(32) < 4, 0, 255).astype(np.uint8)[None]
                            .repeat(24, 0)])
    _png(tmp_path / 'la.png', grey_alpha, 4)        # grey + alpha: ids, read as such
    lab = load_label(tmp_path / 'la.png', lut=remap_lut(None, 2))
    assert (lab[:, :4] == 255).all() and lab[6, 6] == 1 and lab[20, 20] == 0


def test_grey_alpha_id_labels_import_with_class_names(tmp_path):
    """They were 'a colour image: pass a class table' (OpenCV reads grey+alpha as four channels)."""
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    _png(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png', np.dstack([_square(), np.full((24, 32), 255, np.uint8)]), 4)
    import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'])
    assert np.array_equal(cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED), _square())


def test_a_paletted_label_is_read_by_its_colours_with_a_table(tmp_path):
    """With a class table a paletted PNG is read by its colours (without one, by its indices:
    test_user_data_labels)."""
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    _png(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png', _square(), 3, palette=[(0, 0, 0), (128, 0, 0)])
    (tmp_path / 'classes.csv').write_text('name,r,g,b\nbackground,0,0,0\naeroplane,128,0,0\n')
    import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv')
    assert np.array_equal(cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED), _square())


def test_stereo_labels_with_one_stamp_go_by_their_sequence_folder(tmp_path, caplog):
    """Two cameras stamping each frame alike: a label in a folder named after its sequence goes to that camera's
    frame; one in a flat folder was skipped as 'matches 0 frames' (two have its stamp): it now says so and what
    to do."""
    from support.bags import mono8_bag

    from vidseg_ros.data.datasets.labels import write_label
    extract([mono8_bag(tmp_path / 'bag', ['/left/image', '/right/image'])], tmp_path / 'ds')
    recs = read_index(tmp_path / 'ds')
    for r in recs:
        left = 'left' in r.sequence
        write_label(tmp_path / 'seq' / r.sequence / f'{r.stamp_ns}.png', np.full((8, 8), left, np.uint8))
        write_label(tmp_path / 'flat' / f'{r.stamp_ns}.png', np.ones((8, 8), np.uint8))
    assert import_labels(tmp_path / 'ds', tmp_path / 'flat', class_names=['a', 'b'])['imported'] == 0
    assert 'label 1000000000.png: 2 frames have its stamp (bag_left_image_000, bag_right_image_000); skipped: put ' \
        'it in a folder named after its sequence' in caplog.text
    assert import_labels(tmp_path / 'ds', tmp_path / 'seq', class_names=['a', 'b'])['imported'] == 6
    src = extracted_source(tmp_path / 'ds')
    assert [(r.sequence[4:], int(src.read_label(r).max())) for r in src.records] == \
        [(f'{side}_image_00{i}', side == 'left') for side in ('left', 'right') for i in range(3)]
