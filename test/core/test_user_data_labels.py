"""A user's own labels, as labelling tools and phones write them: paletted PNGs (indices are the ids), 16-bit id
PNGs, ids beyond the named classes, JPEG masks, and photos with an EXIF orientation."""
from __future__ import annotations

import logging
import struct

import cv2
import numpy as np
import pytest

from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.layouts import FrameRecord, read_index, read_label_file, read_meta, write_index
from vidseg_ros.data.images import read_rgb

H, W = 24, 32


def _dataset(root, n=2, frames=None):
    """An extracted dataset of ``n`` frames (PNG, or the given files)."""
    (root / 'ds' / 'images' / 's').mkdir(parents=True)
    recs = []
    for i in range(n):
        image = frames[i] if frames else root / 'ds' / 'images' / 's' / f'{i}.png'
        if not frames:
            cv2.imwrite(str(image), np.full((H, W, 3), 40 * i, np.uint8))
        recs.append(FrameRecord('s', i, image, None, 1000 + i))
    write_index(root / 'ds', recs)
    return root / 'ds', recs


def _chunk(kind: bytes, data: bytes) -> bytes:
    import zlib
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paletted_png(path, ids: np.ndarray, palette) -> None:
    """A mode-'P' PNG as PIL / VOC / DAVIS write it (OpenCV cannot write one): indices + PLTE."""
    import zlib
    h, w = ids.shape
    raw = b''.join(b'\x00' + ids[y].astype(np.uint8).tobytes() for y in range(h))
    body = _chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 3, 0, 0, 0))
    body += _chunk(b'PLTE', bytes(v for rgb in palette for v in rgb))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + body + _chunk(b'IDAT', zlib.compress(raw)) + _chunk(b'IEND', b''))


def _ids():
    ids = np.zeros((H, W), np.uint8)
    ids[:8] = 2          # sky
    ids[12:20, 4:14] = 1  # car
    ids[0, 0] = 255       # one unlabelled pixel
    return ids


# VOC's first colours, then the 256-entry padding of black most tools write
VOC = [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 252 + [(224, 224, 192)]


def test_a_paletted_label_without_a_class_table_is_read_by_its_indices(tmp_path):
    """VOC / DAVIS 2017 / PIL 'P' masks store the class id as the palette index: with --class-names they were
    refused (read by colour, a class table was demanded)."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        _paletted_png(tmp_path / 'lab' / f'{r.stamp_ns}.png', _ids(), VOC)
    import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])
    for r in read_index(ds):
        assert np.array_equal(cv2.imread(str(r.label), cv2.IMREAD_UNCHANGED), _ids())
    assert read_meta(ds)['colors'] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]     # the palette, as the tool showed it


def test_a_padded_palette_whose_colours_repeat_within_the_classes_leaves_the_colours_to_training(tmp_path):
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        _paletted_png(tmp_path / 'lab' / f'{r.stamp_ns}.png', _ids(), [(0, 0, 0)] * 256)
    import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])
    assert 'colors' not in read_meta(ds)


def test_a_paletted_davis_2017_annotation_reads_as_ids(tmp_path):
    """read_label_file (training, propagate, the DAVIS layout) said 'a colour image; use label-import --palette'
    (an option that does not exist) for a paletted annotation."""
    _paletted_png(tmp_path / 'a.png', _ids(), VOC)
    assert np.array_equal(read_label_file(tmp_path / 'a.png'), _ids())


def test_a_colour_label_in_training_names_an_option_that_exists(tmp_path):
    cv2.imwrite(str(tmp_path / 'c.png'), np.full((H, W, 3), (9, 0, 0), np.uint8))
    with pytest.raises(ValueError, match='label-import DATASET LABEL_DIR --classes classes.csv') as e:
        read_label_file(tmp_path / 'c.png')
    assert '--palette' not in str(e.value)


def test_a_16_bit_id_label_within_0_255_imports_and_one_above_is_refused(tmp_path):
    """16-bit id PNGs (numpy scripts, some tools) were refused by label-import although training reads them."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), _ids().astype(np.uint16))
    import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])
    assert np.array_equal(cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED), _ids())
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[1].stamp_ns}.png'), np.full((H, W), 1000, np.uint16))
    with pytest.raises(ValueError, match=r'label values 1000\.\.1000 in a uint16 image; class-id labels hold ids '
                                         r'0\.\.255'):
        import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])


def test_ids_beyond_the_named_classes_are_warned_about(tmp_path, caplog):
    """Labels counted from 1 (1 = road, 2 = car, 3 = sky) imported with three names: sky (3) became ignore in
    silence, a whole class gone from training."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), np.where(_ids() == 255, 255, _ids() + 1))
    with caplog.at_level(logging.WARNING):
        import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])
    text = ' '.join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert 'value(s) 3 (first in' in text and "no class id of the 3 classes (0..2: 'road', 'car', 'sky')" in text
    assert "and 'road' got no pixel in any label" in text and 'sky' not in text.split('pixels became ignore')[1]


def test_mapped_and_ignore_values_are_not_warned_about(tmp_path, caplog):
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        ids = _ids()
        ids[ids == 1] = 9
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), ids)
    with caplog.at_level(logging.WARNING):
        import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'], mapping={9: 1})
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_folder_of_jpeg_masks_is_named_as_such(tmp_path):
    """'not a folder with label PNGs' for a folder holding 2 JPEG masks: the user could not tell why."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.jpg'), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r'holds no label PNG \(found 2 \.jpg files\): labels are read from '
                                                r'PNGs, .* \(colour JPEG masks: give --classes and --color-tolerance 8\)'):
        import_labels(ds, tmp_path / 'lab', class_names=['a', 'b'])


def _exif_jpeg(path, rgb: np.ndarray, orientation: int) -> None:
    """A phone-style JPEG: pixels as stored plus an EXIF Orientation tag (APP1 after SOI)."""
    ok, buf = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    tiff = b'MM\x00\x2a\x00\x00\x00\x08' + struct.pack('>H', 1) + struct.pack('>HHIHH', 0x0112, 3, 1, orientation, 0)
    tiff += b'\x00\x00\x00\x00'
    app1 = b'Exif\x00\x00' + tiff
    data = buf.tobytes()
    path.write_bytes(data[:2] + b'\xff\xe1' + struct.pack('>H', len(app1) + 2) + app1 + data[2:])


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_opencv_applies_it_to_frames(tmp_path, orientation):
    from vidseg_ros.data.image_headers import file_image_hw
    from vidseg_ros.data.images import orient     # new helpers: the other tests run on old code
    rgb = np.random.default_rng(orientation).integers(0, 255, (H, W, 3)).astype(np.uint8)
    _exif_jpeg(tmp_path / 'f.jpg', rgb, orientation)
    stored = cv2.imread(str(tmp_path / 'f.jpg'), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[:, :, ::-1]
    shown = read_rgb(tmp_path / 'f.jpg')
    assert np.array_equal(orient(stored, orientation), shown)
    assert file_image_hw(tmp_path / 'f.jpg') == shown.shape[:2]


def test_a_label_drawn_on_a_turned_phone_photo_imports_and_matches_the_frame_as_read(tmp_path):
    """A phone JPEG (stored 32x24, EXIF 6: shown 24x32) as a frame, its label drawn on the shown photo:
    label-import compared the label with the *stored* size and refused it, although training reads the
    frame turned (read_rgb)."""
    frames = []
    for i in range(2):
        frames.append(tmp_path / f'phone {i} é.jpg')
        _exif_jpeg(frames[-1], np.zeros((H, W, 3), np.uint8), 6)
    ds, recs = _dataset(tmp_path, frames=frames)
    shown_hw = read_rgb(frames[0]).shape[:2]
    assert shown_hw == (W, H)
    (tmp_path / 'lab').mkdir()
    label = np.zeros(shown_hw, np.uint8)
    label[:5] = 1
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), label)
    import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'])
    assert np.array_equal(read_label_file(read_index(ds)[0].label), label)


def test_a_label_in_the_stored_orientation_of_a_turned_photo_is_refused_saying_why(tmp_path):
    frames = [tmp_path / 'phone.jpg']
    _exif_jpeg(frames[0], np.zeros((H, W, 3), np.uint8), 8)
    ds, recs = _dataset(tmp_path, n=1, frames=frames)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match=r'is 32x24 but its frame .* is 24x32; .* EXIF orientation 8 turns it by '
                                         r'90 degrees for display'):
        import_labels(ds, tmp_path / 'lab', class_names=['bg', 'obj'])


def test_a_label_png_with_an_orientation_tag_is_turned_like_its_frame(tmp_path):
    """A mask saved with its photo's EXIF (a tool copying metadata): it is shown turned, so it is read turned,
    the rule frames follow; OpenCV's IMREAD_UNCHANGED left it as stored."""
    ids = np.zeros((H, W), np.uint8)
    ids[:4, :6] = 1
    ok, buf = cv2.imencode('.png', ids)
    data = buf.tobytes()
    tiff = b'II\x2a\x00\x08\x00\x00\x00' + struct.pack('<H', 1) + struct.pack('<HHIHH', 0x0112, 3, 1, 3, 0) + b'\0' * 4
    at = 8 + 25     # after the signature and IHDR
    (tmp_path / 'l.png').write_bytes(data[:at] + _chunk(b'eXIf', tiff) + data[at:])
    assert np.array_equal(read_label_file(tmp_path / 'l.png'), ids[::-1, ::-1])


def test_a_phone_jpeg_with_exif_blocks_past_64_kib_is_still_measured_as_displayed(tmp_path):
    """The header reader gave up after 64 KiB and decoded the file ignoring its orientation."""
    from vidseg_ros.data.image_headers import file_image_hw
    _exif_jpeg(tmp_path / 'f.jpg', np.zeros((H, W, 3), np.uint8), 6)
    data = (tmp_path / 'f.jpg').read_bytes()
    pad = b'\xff\xe2' + struct.pack('>H', 65000) + b'\0' * 64998     # APP2 blocks (ICC / MPF) of 65 kB
    (tmp_path / 'f.jpg').write_bytes(data[:2] + pad + pad + data[2:])     # the frame header past 128 kB
    assert file_image_hw(tmp_path / 'f.jpg') == read_rgb(tmp_path / 'f.jpg').shape[:2] == (W, H)


def test_finetune_reads_a_paletted_davis_annotation_by_its_indices(tmp_path):
    """One-shot fine-tuning on a DAVIS 2017 first-frame annotation (paletted) said 'a colour image'."""
    from vidseg_ros.tools.finetune import _read_mask
    _paletted_png(tmp_path / '00000.png', _ids(), VOC)
    assert np.array_equal(_read_mask(tmp_path / '00000.png'), _ids())


def test_propagate_measures_frames_as_displayed(tmp_path):
    """Phone photos of one stored size, one turned by its EXIF tag, were one size to propagate's sequence split,
    while read_rgb gave it two sizes (and flow then failed on them)."""
    from vidseg_ros.data.labelling.run import _image_hw
    _exif_jpeg(tmp_path / 'a.jpg', np.zeros((H, W, 3), np.uint8), 1)
    _exif_jpeg(tmp_path / 'b.jpg', np.zeros((H, W, 3), np.uint8), 6)
    assert _image_hw(tmp_path / 'a.jpg') == read_rgb(tmp_path / 'a.jpg').shape[:2] == (H, W)
    assert _image_hw(tmp_path / 'b.jpg') == read_rgb(tmp_path / 'b.jpg').shape[:2] == (W, H)


def test_labels_without_a_class_pixel_are_warned_about(tmp_path, caplog):
    """All-ignore masks (exported before anything was drawn) imported in silence, and `vidseg train` then
    'trained' a model at loss 0.0 on them."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), np.full((H, W), 255, np.uint8))
    with caplog.at_level(logging.WARNING):
        import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])
    text = ' '.join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert '2 of 2 label(s) have no pixel of any class (all ignore 255), e.g. ' in text
    assert text.endswith('training learns nothing from them; no label has one')


def _jpeg_colour_masks(tmp_path, recs, colours):
    (tmp_path / 'lab').mkdir()
    (tmp_path / 'classes.csv').write_text('name,r,g,b\n' + ''.join(f'c{i},{r},{g},{b}\n'
                                                                   for i, (r, g, b) in enumerate(colours)))
    rgb = np.array(colours, np.uint8)[np.clip(_ids(), 0, 2)]
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.jpg'), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return np.clip(_ids(), 0, 2)


def test_jpeg_colour_masks_import_with_a_colour_tolerance_and_no_pixel_gets_a_wrong_class(tmp_path):
    """JPEG colour masks were refused ('no label PNGs'), and the same masks saved as PNG lost ~75 % of their
    pixels (and whole classes) to ignore: JPEG shifts colours by a few values everywhere, not just at edges."""
    ds, recs = _dataset(tmp_path)
    want = _jpeg_colour_masks(tmp_path, recs, [(128, 64, 128), (0, 0, 255), (70, 130, 180)])
    import_labels(ds, tmp_path / 'lab', classes=tmp_path / 'classes.csv', color_tolerance=8)
    got = cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED)
    assert np.all((got == want) | (got == 255))      # pixels too far off are ignore, never another class
    assert (got == want).mean() > 0.6          # a 24x32 mask is mostly edges; ~92 % at 64x96


def test_a_colour_within_the_tolerance_of_two_classes_is_ignore():
    from vidseg_ros.data.datasets.labels import _colour_ids
    rgb = np.array([[[100, 100, 100], [103, 100, 100], [105, 100, 100], [110, 100, 100], [0, 0, 250]]], np.uint8)
    colors = [(100, 100, 100), (110, 100, 100), (0, 0, 255)]
    assert _colour_ids(rgb, colors, 255, 5)[0].tolist() == [[0, 0, 255, 1, 2]]     # 105: 5 from both
    assert _colour_ids(rgb, colors, 255, 0)[0].tolist() == [[0, 255, 255, 1, 255]]


def test_a_grey_jpeg_label_is_refused_and_the_tolerance_is_checked(tmp_path):
    ds, recs = _dataset(tmp_path, n=1)
    (tmp_path / 'lab').mkdir()
    cv2.imwrite(str(tmp_path / 'lab' / f'{recs[0].stamp_ns}.jpg'), _ids())
    with pytest.raises(ValueError, match='is a grey JPEG: its class ids are shifted by the compression'):
        import_labels(ds, tmp_path / 'lab', class_names=['a', 'b', 'c'], color_tolerance=8)
    with pytest.raises(ValueError, match='color_tolerance 65: give 0..64'):
        import_labels(ds, tmp_path / 'lab', class_names=['a', 'b', 'c'], color_tolerance=65)


def test_the_class_tables_ignore_value_is_not_warned_about(tmp_path, caplog):
    """A table with ids 0/10/20 and 'unlabelled' = 99: 99 was reported as no class id."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    (tmp_path / 't.csv').write_text('id,name,r,g,b\n0,road,1,2,3\n10,car,4,5,6\n20,sky,7,8,9\n99,unlabelled,0,0,0\n')
    ids = np.array([0, 10, 20, 99, 7], np.uint8)[np.minimum(np.arange(W) // 7, 4)][None].repeat(H, 0)
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), ids)
    with caplog.at_level(logging.WARNING):
        import_labels(ds, tmp_path / 'lab', classes=tmp_path / 't.csv')
    text = ' '.join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert 'hold value(s) 7 (first in' in text and '99' not in text.split('(first in')[0]
    got = cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED)
    assert got[0, ::7].tolist() == [0, 1, 2, 255, 255]


def _davis(root, mask_hw):
    for i in range(2):
        (root / 'JPEGImages' / '480p' / 'walk').mkdir(parents=True, exist_ok=True)
        (root / 'Annotations' / '480p' / 'walk').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / 'JPEGImages' / '480p' / 'walk' / f'{i:05d}.jpg'), np.full((H, W, 3), 50, np.uint8))
        cv2.imwrite(str(root / 'Annotations' / '480p' / 'walk' / f'{i:05d}.png'), np.zeros(mask_hw, np.uint8))
    return root


def test_a_layout_whose_masks_are_not_their_frames_size_is_refused_before_writing(tmp_path):
    """Own data in the DAVIS layout with half-size masks: indexed, trained on (labels resized in silence), and
    eval failed with 'sizes differ: (768,) vs (192,)'."""
    from vidseg_ros.data.datasets.label_import import import_layout
    src = _davis(tmp_path / 'davis', (H // 2, W // 2))
    with pytest.raises(ValueError, match=r'label .*00000\.png is 16x12 but its frame .*00000\.jpg is 32x24'):
        import_layout(src, tmp_path / 'out', 'davis')
    assert not (tmp_path / 'out' / 'index.csv').exists()


def test_eval_names_a_label_of_another_size_than_its_frame(tmp_path):
    from vidseg_ros.data.datasets.layouts import extracted_source
    from vidseg_ros.tools.evaluate import _label_of
    ds, recs = _dataset(tmp_path, n=1)
    cv2.imwrite(str(ds / 'l.png'), np.zeros((H // 2, W // 2), np.uint8))
    write_index(ds, [FrameRecord('s', 0, recs[0].image, ds / 'l.png', 1000, 'human')])
    (ds / 'dataset.yaml').write_text('classes: [a, b]\nignore_index: 255\n')
    src = extracted_source(ds)
    with pytest.raises(ValueError, match=r'label .*l\.png is 16x12 but its frame .*0\.png is 32x24'):
        _label_of(src, src.records[0], (H, W))


def test_class_ids_saved_as_rgb_are_read_as_ids(tmp_path):
    """A mask of ids 0..2 saved as RGB (1 -> (1, 1, 1)), as many tools and scripts save masks: label-import
    demanded a class table of the colours (1, 1, 1), ..., and training refused it as a colour image."""
    ds, recs = _dataset(tmp_path)
    (tmp_path / 'lab').mkdir()
    for r in recs:
        cv2.imwrite(str(tmp_path / 'lab' / f'{r.stamp_ns}.png'), np.repeat(_ids()[:, :, None], 3, axis=2))
    import_labels(ds, tmp_path / 'lab', class_names=['road', 'car', 'sky'])
    assert np.array_equal(cv2.imread(str(read_index(ds)[0].label), cv2.IMREAD_UNCHANGED), _ids())
    assert np.array_equal(read_label_file(tmp_path / 'lab' / f'{recs[0].stamp_ns}.png'), _ids())
