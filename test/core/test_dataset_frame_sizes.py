"""Training refuses a dataset frame or label larger than MAX_INPUT_PIXELS from its header, when its datasets are
built, before anything is decoded.

The datasets decoded every frame and label as they read it: a 1.2 MB PNG of 20000x20000 among ten 64x64 frames
took `vidseg train` to 5.1 GB (and `vidseg eval` to 15.5 GB), in each loader worker, for each sample holding it.
A crafted header claiming that size stands in for such a file here (a few hundred bytes); any decode of it fails
the test (``_no_decoding_of``), so no test allocates the gigabytes the old code did.
"""
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.eval_data import folder_dataset
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.data import images
from vidseg_ros.data.datasets.public_layouts import open_source
from vidseg_ros.data.images import ImageError
from vidseg_ros.training import data_setup
from vidseg_ros.training.datasets import FrameDataset, RealClipDataset, SequenceDataset, TripletDataset

LIMIT = 'of 20000x20000 = 400000000 pixels exceeds max_input_pixels 16777216'


def _big_png(path: Path, grey: bool = False) -> None:
    """A PNG whose header says 20000x20000 (its data is a few rows of zeros)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', 20000, 20000, 8, 0 if grey else 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\x00' * 60001 * 4))
                     + chunk(b'IEND', b''))


def _dataset(root: Path, big: str, frame: int, labelled=(0, 1, 2, 3, 4, 5)) -> Path:
    """Six 64x64 frames of sequence 's' (labels on ``labelled``), frame ``frame``'s image or label (``big``) a
    20000x20000 PNG; the path of that file."""
    rng = np.random.default_rng(0)
    labels = [np.zeros((64, 64), np.uint8) if i in labelled else None for i in range(6)]
    folder_dataset(root, [rng.integers(0, 255, (64, 64, 3), np.uint8) for _ in range(6)], labels)
    path = root / ('images' if big == 'image' else 'labels') / 's' / f'{frame}.png'
    _big_png(path, grey=big == 'label')
    return path


@pytest.fixture
def _no_decoding_of(monkeypatch):
    """Fail at any decode of a file named big in the test: the check has to come first."""
    decode = images._imread
    bombs: list[Path] = []

    def guarded(path, flags):
        assert Path(path) not in bombs, f'{path} was decoded'
        return decode(path, flags)
    monkeypatch.setattr(images, '_imread', guarded)
    return bombs


@pytest.mark.parametrize('big', ['image', 'label'])
def test_frame_dataset_refuses_a_frame_beyond_the_limit_when_built(tmp_path, _no_decoding_of, big):
    path = _dataset(tmp_path / 'ds', big, 2)
    _no_decoding_of.append(path)
    with pytest.raises(ImageError, match=f'^{big} file {re.escape(str(path))} {LIMIT}$'):
        FrameDataset(open_source(tmp_path / 'ds', 'all'))


@pytest.mark.parametrize('make', [
    lambda src: TripletDataset(src, max_distance=3),
    lambda src: SequenceDataset(src, length=3),
    lambda src: RealClipDataset(src, length=3)], ids=['triplets', 'clips', 'real_clips'])
def test_temporal_datasets_refuse_an_unlabelled_neighbour_beyond_the_limit(tmp_path, _no_decoding_of, make):
    """An unlabelled frame is read as a key frame or as part of a clip: it is checked as well."""
    path = _dataset(tmp_path / 'ds', 'image', 2, labelled=(3, 4, 5))
    _no_decoding_of.append(path)
    with pytest.raises(ImageError, match=LIMIT):
        make(open_source(tmp_path / 'ds', 'all'))


def test_real_clips_do_not_check_labels_they_never_read(tmp_path, _no_decoding_of):
    _dataset(tmp_path / 'ds', 'label', 2)
    assert len(RealClipDataset(open_source(tmp_path / 'ds', 'all'), length=3)) == 4


def test_noise_copies_refuse_it_before_measuring_the_noise(tmp_path, _no_decoding_of):
    """noise_copies measures the noise on every frame of the split (decoding each) before the dataset is built."""
    path = _dataset(tmp_path / 'ds', 'image', 2, labelled=(0,))
    _no_decoding_of.append(path)
    with pytest.raises(ImageError, match=LIMIT):
        data_setup.noise_sigma(open_source(tmp_path / 'ds', 'all'))


@pytest.mark.parametrize('mode, big, frame', [('perframe', 'image', 3), ('perframe', 'label', 3),
                                              ('keyframe', 'image', 0)])
def test_vidseg_train_says_it_in_one_line_before_decoding(tmp_path, _no_decoding_of, mode, big, frame):
    """keyframe mode read the first frame whole for its size (the synthetic motion's scale), before the datasets."""
    path = _dataset(tmp_path / 'ds', big, frame)
    _no_decoding_of.append(path)
    config = tmp_path / 'c.yaml'
    config.write_text(yaml.safe_dump({
        'name': 't', 'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 16}, 'mode': mode, 'dataset': 'folder',
        'data_root': str(tmp_path / 'ds'), 'train_split': 'all', 'val_split': 'all', 'input_hw': [64, 64],
        'batch_size': 2, 'epochs': 1, 'num_threads': 1, 'device': 'cpu', 'runs_dir': str(tmp_path / 'runs')}))
    r = CliRunner().invoke(app, ['train', str(config)])
    assert r.exit_code == 2, r.output
    line, = r.stderr.strip().splitlines()
    assert line == f'vidseg train: error: {big} file {path} {LIMIT}'


@pytest.mark.parametrize('big', ['image', 'label'])
def test_vidseg_eval_says_it_in_one_line_before_decoding(tmp_path, _no_decoding_of, big):
    """eval decoded a 20000x20000 frame and label (15.5 GB, still running after 12 min) or a big label alone
    (3.8 GB) before the size mismatch stopped it."""
    from support.eval_data import tiny_fpn
    path = _dataset(tmp_path / 'ds', big, 2)
    _no_decoding_of.append(path)
    model = tiny_fpn(tmp_path / 'm.pt')
    r = CliRunner().invoke(app, ['eval', str(model), str(tmp_path / 'ds'), '--split', 'all', '--key-intervals', '1',
                                 '--out-dir', str(tmp_path / 'out')])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line == f'vidseg eval: error: {big} file {path} {LIMIT}'


@pytest.mark.parametrize('big', ['image', 'label'])
def test_vidseg_propagate_says_it_in_one_line_before_any_job(tmp_path, _no_decoding_of, big):
    """propagate decoded a 20000x20000 frame in its flow job (1.2 GB, then flows of 3.2 GB each) or a human label
    as the job read it; other jobs had written their labels meanwhile."""
    path = _dataset(tmp_path / 'ds', big, 3, labelled=(0, 3))
    _no_decoding_of.append(path)
    index = (tmp_path / 'ds' / 'index.csv').read_bytes()
    r = CliRunner().invoke(app, ['propagate', str(tmp_path / 'ds')])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1] == f'vidseg propagate: error: {big} file {path} {LIMIT}'
    assert (tmp_path / 'ds' / 'index.csv').read_bytes() == index and len(list((tmp_path / 'ds').rglob('*.png'))) == 8


@pytest.mark.parametrize('kind, big', [('noise', 'image'), ('per_sequence', 'image'), ('per_sequence', 'label')])
def test_vidseg_make_variant_says_it_in_one_line_before_decoding(tmp_path, _no_decoding_of, kind, big):
    """make-variant --kind noise measured the noise on every frame (decoding the 20000x20000 one, 2.4 GB); other
    variants wrote a dataset holding it, which train then refused."""
    path = _dataset(tmp_path / 'ds', big, 2, labelled=(0, 2))
    _no_decoding_of.append(path)
    r = CliRunner().invoke(app, ['make-variant', str(tmp_path / 'ds'), str(tmp_path / 'out'), '--kind', kind,
                                 '--split', 'all', '--n', '0'])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1] == f'vidseg make-variant: error: {big} file {path} {LIMIT}'
    assert not (tmp_path / 'out' / 'index.csv').exists()


def test_a_variant_that_leaves_the_big_frame_out_is_made(tmp_path, _no_decoding_of):
    """Only what the variant holds is checked: labelled frames, not the big unlabelled one."""
    _no_decoding_of.append(_dataset(tmp_path / 'ds', 'image', 2, labelled=(0, 4)))
    r = CliRunner().invoke(app, ['make-variant', str(tmp_path / 'ds'), str(tmp_path / 'out'), '--kind',
                                 'per_sequence', '--split', 'all', '--n', '1'])
    assert r.exit_code == 0, r.output
    assert (tmp_path / 'out' / 'index.csv').is_file()


def test_a_camvid_layout_import_says_it_in_one_line_before_converting_a_label(tmp_path, _no_decoding_of):
    src = tmp_path / 'camvid'
    (src / 'train').mkdir(parents=True)
    (src / 'trainannot').mkdir()
    for i in range(3):
        images.write_image_atomic(src / 'train' / f'0001TP_{i:06d}.png', np.zeros((8, 8, 3), np.uint8))
        images.write_image_atomic(src / 'trainannot' / f'0001TP_{i:06d}.png', np.zeros((8, 8), np.uint8))
    path = src / 'trainannot' / '0001TP_000001.png'
    _big_png(path, grey=True)
    _no_decoding_of.append(path)
    r = CliRunner().invoke(app, ['label-import', str(src), '--layout', 'camvid', '--out', str(tmp_path / 'out')])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1] == f'vidseg label-import: error: label file {path} {LIMIT}'
    assert not list((tmp_path / 'out').rglob('*.png'))
