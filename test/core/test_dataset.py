"""PyTorch datasets: shapes, dtypes, ignore handling, consistent augmentation, real vs synthetic motion."""
import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.training import augment
from vidseg_ros.training.augment import AugmentConfig
from vidseg_ros.training.datasets import FrameDataset, SequenceDataset, TripletDataset
from vidseg_ros.data.datasets.layouts import FrameRecord, extracted_source, read_index, write_index, write_meta
from vidseg_ros.data.datasets.public_layouts import camvid_source, davis_source


def _synthetic_video(root, n=6, hw=(48, 64), labelled=(0, 3, 5)):
    """Tiny extracted dataset: a bright square moving right by 2 px per frame."""
    (root / 'images' / 's0').mkdir(parents=True)
    (root / 'labels' / 's0').mkdir(parents=True)
    recs = []
    for i in range(n):
        img = np.full(hw + (3,), 40, np.uint8)
        lab = np.zeros(hw, np.uint8)
        img[10:26, 5 + 2 * i:21 + 2 * i] = (200, 100, 50)
        lab[10:26, 5 + 2 * i:21 + 2 * i] = 1
        ip = root / 'images' / 's0' / f'{i * 1000}.png'
        cv2.imwrite(str(ip), img[:, :, ::-1])
        lp = None
        if i in labelled:
            lp = root / 'labels' / 's0' / f'{i * 1000}.png'
            cv2.imwrite(str(lp), lab)
        recs.append(FrameRecord('s0', i, ip, lp, stamp_ns=i * 1000,
                                label_source='human' if lp else 'none'))
    write_index(root, recs)
    write_meta(root, {'classes': ['bg', 'square'], 'ignore_index': 255})
    return extracted_source(root)


def test_index_roundtrip(tmp_path):
    src = _synthetic_video(tmp_path)
    again = read_index(tmp_path)
    assert [r.index for r in again] == list(range(6))
    assert again == src.records
    assert src.num_classes == 2 and src.ignore_index == 255


def _edit_index(root, row, column, value):
    """Set one cell of index.csv (row 1 = the first data row; value None drops the row's cells from there)."""
    lines = (root / 'index.csv').read_text().splitlines()
    header = lines[0].split(',')
    cells = lines[row].split(',')
    at = header.index(column)
    cells = cells[:at] if value is None else cells[:at] + [value] + cells[at + 1:]
    lines[row] = ','.join(cells)
    (root / 'index.csv').write_text('\n'.join(lines) + '\n')


@pytest.mark.parametrize('column, value, says', [
    ('stamp_ns', '', 'column stamp_ns: empty'),
    ('stamp_ns', '1.5e9', "column stamp_ns: '1.5e9' is not an integer"),
    ('index', 'x', "column index: 'x' is not an integer"),
    ('index', '', 'column index: empty'),
    ('image', '', 'column image: empty'),
    ('sequence', ' ', 'column sequence: empty'),
    ('stamp_ns', None, 'column stamp_ns: empty (the row has fewer cells than the header)'),
])
def test_read_index_names_the_file_row_and_column_of_a_bad_cell(tmp_path, column, value, says):
    """An empty stamp_ns cell was "invalid literal for int() with base 10: ''" naming nothing."""
    _synthetic_video(tmp_path)
    _edit_index(tmp_path, 3, column, value)
    with pytest.raises(ValueError) as err:
        read_index(tmp_path)
    assert str(err.value) == f'{tmp_path / "index.csv"}: row 3 (line 4), {says}'


def test_read_index_names_a_missing_column(tmp_path):
    _synthetic_video(tmp_path)
    text = (tmp_path / 'index.csv').read_text()
    (tmp_path / 'index.csv').write_text(text.replace('stamp_ns', 'stamp', 1))
    with pytest.raises(ValueError, match=r'index\.csv: no column stamp_ns in the header \(sequence,index,stamp,'):
        read_index(tmp_path)
    (tmp_path / 'index.csv').write_text('')
    with pytest.raises(ValueError, match=r'no column sequence, index, stamp_ns, image in the header \(empty file\)'):
        read_index(tmp_path)


def test_read_index_takes_optional_cells_empty(tmp_path):
    _synthetic_video(tmp_path, labelled=(0,))
    for column in ('label', 'label_source', 'bag', 'topic', 'encoding'):
        _edit_index(tmp_path, 2, column, '')
    rec = read_index(tmp_path)[1]
    assert rec.label is None and rec.label_source == 'none' and rec.bag == rec.topic == rec.encoding == ''


def test_frame_dataset_shapes_and_ignore(tmp_path):
    src = _synthetic_video(tmp_path)
    cfg = AugmentConfig(crop_hw=[64, 80], hflip=True, jitter=0.2, scale_range=[0.8, 1.2])
    ds = FrameDataset(src, cfg, seed=0)
    assert len(ds) == 3
    s = ds[0]
    assert s['image'].shape == (3, 64, 80) and s['image'].dtype == torch.float32
    assert 0.0 <= s['image'].min() and s['image'].max() <= 1.0
    assert s['label'].shape == (64, 80) and s['label'].dtype == torch.int64
    # The crop is larger than the frame: padding must be ignore, not background.
    assert (s['label'] == 255).any()
    assert set(s['label'].unique().tolist()) <= {0, 1, 255}


def test_eval_is_deterministic_and_unchanged(tmp_path):
    src = _synthetic_video(tmp_path)
    ds = FrameDataset(src, None, train=False)
    s = ds[0]
    img = cv2.imread(str(src.labelled()[0].image))[:, :, ::-1]
    assert torch.equal((s['image'] * 255).round().byte(), torch.from_numpy(img.copy()).permute(2, 0, 1))


def test_triplet_real_neighbours(tmp_path):
    src = _synthetic_video(tmp_path)
    ds = TripletDataset(src, AugmentConfig(hflip=True), max_distance=3, motion='real', seed=1)
    assert len(ds) == 2     # frames 3 and 5 have earlier frames; frame 0 does not
    for i in range(len(ds)):
        s = ds[i]
        assert 1 <= s['distance'] <= 3 and not s['synthetic']
        assert s['key'].shape == s['current'].shape == (3, 48, 64)
        # Same flip on both frames: the square's column shift between them equals 2 px per frame.
        kx = (s['key'][0] > 0.5).float().sum(0).nonzero().flatten()
        cx = (s['current'][0] > 0.5).float().sum(0).nonzero().flatten()
        assert abs(abs(int(cx[0]) - int(kx[0])) - 2 * s['distance']) <= 1


def test_triplet_synthetic_fallback(tmp_path):
    src = _synthetic_video(tmp_path, labelled=(0,))
    ds = TripletDataset(src, None, max_distance=15, motion='auto', seed=3)
    s = ds[0]
    assert s['synthetic'] and 1 <= s['distance'] <= 15
    assert not torch.equal(s['key'], s['current'])
    with pytest.raises(ValueError):
        TripletDataset(src, None, max_distance=15, motion='real')


def test_sequence_dataset(tmp_path):
    src = _synthetic_video(tmp_path)
    ds = SequenceDataset(src, length=3, seed=0, motion='auto')
    for i in range(len(ds)):
        s = ds[i]
        assert s['frames'].shape == (3, 3, 48, 64) and s['labels'].shape == (3, 48, 64)
        t = s['label_pos']
        for k in range(3):
            has = (s['labels'][k] != 255).any().item()
            assert has == (k == t)
    dense = SequenceDataset(src, length=2, motion='real', all_labels=True, train=False)
    s = dense[len(dense) - 1]
    assert not s['synthetic'] and s['label_pos'] == 1


def test_augment_params_shared():
    """One draw moves image and label alike: the label stays on the image's content (flip, scale, crop)."""
    cfg = AugmentConfig(crop_hw=[32, 32], hflip=True, scale_range=[0.5, 1.5])
    blocks = np.random.default_rng(2).integers(0, 2, (5, 5), dtype=np.uint8)   # mirrored: < 50 % agree
    lab = np.kron(blocks, np.ones((8, 10), np.uint8))                       # (40, 50), blocks of 8x10
    img = np.repeat((lab * 200 + 20)[:, :, None], 3, axis=2).astype(np.uint8)
    flips = set()
    for seed in range(8):
        p = augment.draw(cfg, (40, 50), np.random.default_rng(seed))
        flips.add(p.matrix[0, 0] < 0)
        a, out = augment.apply_image(img, p), augment.apply_label(lab, p, 255)
        assert a.shape[:2] == out.shape == (32, 32) and set(np.unique(out)) <= {0, 1, 255}
        inside = out != 255
        agree = ((a[:, :, 0] > 120) == (out == 1))[inside].mean()
        assert inside.mean() > 0.2 and agree > 0.95, (seed, agree)
    assert flips == {True, False}   # both kinds of draw were checked


def test_camvid_layout(camvid_dir):
    src = camvid_source(camvid_dir, 'val')
    assert src.ignore_index == 11 and src.num_classes == 11
    ds = TripletDataset(src, AugmentConfig(resize_scale=0.25), max_distance=15, seed=0, motion='real')
    s = ds[5]
    assert s['distance'] % 2 == 0 and s['current'].shape == (3, 90, 120)
    assert int(s['label'].max()) <= 11
    tr = TripletDataset(camvid_source(camvid_dir, 'train'), AugmentConfig(crop_hw=[64, 64]), seed=0)
    assert tr[0]['synthetic']   # 1 Hz labels, no raw frames in between


def test_davis_layout(davis_dir):
    src = davis_source(davis_dir, ['blackswan'])
    assert len(src.records) == 50 and src.num_classes == 2
    ds = SequenceDataset(src, length=3, augment_cfg=AugmentConfig(crop_hw=[64, 96], resize_scale=0.2),
                         motion='real', seed=0, all_labels=True)
    s = ds[0]
    assert s['frames'].shape == (3, 3, 64, 96)
    assert set(s['labels'].unique().tolist()) <= {0, 1}


def test_a_missing_dataset_folder_says_where_a_relative_path_was_read_from(tmp_path, monkeypatch):
    """eval / propagate / make-variant open datasets through open_source: a missing relative root was the bare
    '[Errno 2] No such file or directory' of a folder listing, with no word on where it was looked for."""
    from vidseg_ros.data.datasets.public_layouts import open_source
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf'nope/ds does not exist \(relative paths are read from the current '
                                                rf'folder {tmp_path}: that is {tmp_path}/nope/ds\)'):
        open_source('nope/ds', 'val')


def test_class_names_with_control_characters_are_refused_where_the_dataset_is_read(tmp_path):
    # a checkpoint refuses such names (check_meta): a training on this dataset failed at its first save
    from vidseg_ros.data.datasets.layouts import read_meta, write_meta
    (tmp_path / 'dataset.yaml').write_text('classes: ["road", "\\e]0;owned\\aSky"]\n')
    with pytest.raises(ValueError, match=r'dataset.yaml: class names hold control characters.*\\x1b'):
        read_meta(tmp_path)
    with pytest.raises(ValueError, match='control characters'):
        write_meta(tmp_path / 'other', {'classes': ['a\nFAKE LINE']})
    write_meta(tmp_path, {'classes': ['road', 'Végétation']})
    assert read_meta(tmp_path)['classes'] == ['road', 'Végétation']


def test_a_label_of_another_size_than_its_frame_is_refused_naming_both(tmp_path):
    """A half-size mask (an index written by hand, or imported before label-import checked sizes) was warped with
    the frame's crop and scale: labels off by a factor of two, trained on without a word."""
    from vidseg_ros.data.datasets.layouts import FrameSource
    cv2.imwrite(str(tmp_path / 'f.png'), np.zeros((64, 96, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'l.png'), np.ones((32, 48), np.uint8))
    source = FrameSource([FrameRecord('s', 0, tmp_path / 'f.png', tmp_path / 'l.png')], ['a', 'b'])
    with pytest.raises(ValueError, match=r"l\.png: the label is 48x32, its frame .*f\.png is 96x64; labels must be "
                                         r"their frame's size"):
        FrameDataset(source, train=False)[0]
    cv2.imwrite(str(tmp_path / 'l.png'), np.ones((64, 96), np.uint8))
    assert tuple(FrameDataset(source, train=False)[0]['label'].shape[-2:]) == (64, 96)


def test_hidden_files_of_a_mac_are_not_frames_of_camvid_or_davis(tmp_path):
    """Copied from a Mac to a USB disk, each image has a ``._name`` beside it: CamVid made a sequence '._0001TP' of
    unreadable frames, DAVIS stopped with ValueError: invalid literal for int() ('._00000')."""
    junk = b'\x00\x05\x16\x07 Mac OS X resource fork'
    camvid = tmp_path / 'camvid'
    (camvid / 'val').mkdir(parents=True)
    (camvid / 'valannot').mkdir()
    for n in (30, 60):
        cv2.imwrite(str(camvid / 'val' / f'0001TP_{n:06d}.png'), np.zeros((8, 8, 3), np.uint8))
        (camvid / 'val' / f'._0001TP_{n:06d}.png').write_bytes(junk)
    assert {(r.sequence, r.index) for r in camvid_source(camvid, 'val').records} == {('0001TP', 30), ('0001TP', 60)}
    davis = tmp_path / 'davis'
    (davis / 'JPEGImages' / '480p' / 'bear').mkdir(parents=True)
    (davis / 'JPEGImages' / '480p' / '.Trashes').mkdir()
    for n in range(2):
        cv2.imwrite(str(davis / 'JPEGImages' / '480p' / 'bear' / f'{n:05d}.jpg'), np.zeros((8, 8, 3), np.uint8))
        (davis / 'JPEGImages' / '480p' / 'bear' / f'._{n:05d}.jpg').write_bytes(junk)
    assert [(r.sequence, r.index) for r in davis_source(davis).records] == [('bear', 0), ('bear', 1)]
