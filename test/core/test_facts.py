"""Facts that lived in two copies and drifted: each now has one home, and these tests pin the choice."""
import os

import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.training.config import TrainConfig

H, W = 48, 64


def _davis(root, seqs=('a', 'b'), n=9, step_noise=12.0):
    """DAVIS layout; successive frames differ by Gaussian noise of std ``step_noise`` (0..255)."""
    rng = np.random.default_rng(0)
    for s in seqs:
        (root / 'JPEGImages/480p' / s).mkdir(parents=True)
        (root / 'Annotations/480p' / s).mkdir(parents=True)
        base = rng.integers(60, 190, (H, W, 3)).astype(np.float32)
        for t in range(n):
            img = np.clip(base + rng.normal(0, step_noise / np.sqrt(2), base.shape), 0, 255).astype(np.uint8)
            mask = np.zeros((H, W), np.uint8)
            mask[10:30, 10 + 2 * t:30 + 2 * t] = 255
            cv2.imwrite(str(root / f'JPEGImages/480p/{s}/{t:05d}.jpg'), img[:, :, ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 100])
            cv2.imwrite(str(root / f'Annotations/480p/{s}/{t:05d}.png'), mask)
    return root


def _cfg(root, **kw) -> TrainConfig:
    base = dict(dataset='davis', data_root=str(root), train_split='all', val_split='', num_classes=2,
                ignore_index=255, input_hw=[32, 64], scale_range=[1.0, 1.0], hflip=False)
    return TrainConfig(**{**base, **kw})


def test_experiment_noise_copies_use_the_measured_sigma(tmp_path):
    """`vidseg experiment`'s noise copies are make-variant's: sigma measured between frames, not 0.03."""
    from vidseg_ros.data.datasets.public_layouts import davis_source
    from vidseg_ros.data.datasets.variants import measure_noise_sigma
    from vidseg_ros.training import data_setup
    root = _davis(tmp_path / 'davis')
    ds = data_setup.train_dataset(_cfg(root, frames_per_video=1, noise_copies=3))
    sigma = measure_noise_sigma(davis_source(root))
    assert 8 < sigma < 20                           # what the frames were made with (12), as JPEG
    assert ds.sigma == pytest.approx(sigma)
    assert len(ds) == 2 * (1 + 3)
    # a copy differs from its original by that noise (in 0..1 units after to_tensor)
    from vidseg_ros.training.augment import AugmentConfig
    ds.cfg, ds.train = AugmentConfig(), False        # whole frames, no random augmentation
    orig, copy = ds[0]['image'], ds[2]['image']     # frame 0 and its first copy (same sequence)
    assert torch.equal(ds[0]['label'], ds[2]['label'])
    assert float((copy - orig).std()) * 255 == pytest.approx(sigma, rel=0.25)


def test_training_noise_copies_of_a_still_video_are_refused(tmp_path):
    """A still video measures sigma 0: noise_copies trained on exact duplicates of its frames, without a word."""
    from vidseg_ros.config import ConfigError
    from vidseg_ros.training import data_setup
    root = _davis(tmp_path / 'davis', step_noise=0.0)
    with pytest.raises(ConfigError, match=r'noise_copies: davis: successive frames are identical \(noise sigma 0, '
                                          r'.*exact duplicates .*set noise_copies: 0, or .*--sigma S'):
        data_setup.train_dataset(_cfg(root, frames_per_video=1, noise_copies=3))
    assert len(data_setup.train_dataset(_cfg(root, frames_per_video=1))) == 2     # without copies: trains


def test_frames_per_video_picks_what_make_variant_picks(tmp_path):
    """One selection: 1 frame per video is the middle one in training as in `make-variant`."""
    from vidseg_ros.data.datasets.public_layouts import davis_source
    from vidseg_ros.data.datasets.variants import per_sequence
    from vidseg_ros.training.data_setup import frames_per_video
    src = davis_source(_davis(tmp_path / 'davis'))
    for n in (1, 2, 4, 0):
        kept = {(r.sequence, r.index) for r in frames_per_video(src, n).records if r.label is not None}
        assert kept == {(r.sequence, r.index) for r in per_sequence(src, n).records}, n
    assert {i for _, i in (k for k in kept)} == set(range(9))      # n = 0: all
    one = frames_per_video(src, 1)
    assert len(one.records) == len(src.records)                     # neighbours stay, unlabelled
    assert sorted(r.index for r in one.records if r.label is not None) == [4, 4]


def test_bag_camera_info_principal_point_is_the_ros_pixel_centre():
    """bag-from-frames writes the same pinhole as video_source_node: cx = (w - 1) / 2, cy = (h - 1) / 2."""
    from vidseg_ros.data.bags.from_frames import camera_info_msg
    from vidseg_ros.data.images import pinhole_intrinsics
    info = camera_info_msg(480, 640, 0, 'camera')
    assert (info.k[2], info.k[5]) == (319.5, 239.5)
    assert (info.p[2], info.p[6]) == (319.5, 239.5)
    k, p = pinhole_intrinsics(640, 480)
    assert list(info.k) == k and list(info.p) == p
    assert k[0] == pytest.approx(320 / np.tan(np.radians(30)))      # 60 deg horizontal field of view


def test_mono8_is_bt601_as_opencv():
    from vidseg_ros.data.bags.from_frames import image_msg
    from vidseg_ros.data.images import from_rgb8
    rgb = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(from_rgb8(rgb, 'mono8'), grey)
    _, msg = image_msg(rgb, 0, 'camera', 'mono8')
    np.testing.assert_array_equal(np.asarray(msg.data).reshape(16, 24), grey)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error on a machine without CUDA')
def test_training_resolves_devices_as_the_engine(tmp_path):
    """One device resolver: training asks for cuda on a CPU-only machine -> the engine's clear error."""
    from vidseg_ros.training.loop import train
    cfg = _cfg(_davis(tmp_path / 'davis', seqs=('a',), n=3), device='cuda', epochs=1, batch_size=1,
               runs_dir=str(tmp_path / 'runs'))
    with pytest.raises(ValueError, match='CUDA is not available here; use auto or cpu'):
        train(cfg)


def test_model_card_describes_the_machine():
    from vidseg_ros.tools.eval_report import card_text
    report = {'model': 'm.pt', 'data': 'd', 'split': 'all', 'sequences': 1, 'device': 'cpu',
              'labelled': False, 'intervals': {'1': {'latency_ms': 1.0, 'latency_key_ms': 1.0,
                                                     'latency_current_ms': float('nan'), 'TC': 0.9}}}
    meta = {'provenance': {'hardware': 'GPU Some Card'}, 'classes': ['a', 'b']}
    card = card_text(report, meta)
    assert '2 shared cores' not in card
    cores = len(os.sched_getaffinity(0))
    assert f'trained on GPU Some Card; evaluated on CPU only ({cores} cores available' in card


def test_one_dataset_opener_for_training_evaluation_and_variants(tmp_path):
    """public_layouts.open_source reads every split spelling the same way, whoever opens the data."""
    from vidseg_ros.config import ConfigError
    from vidseg_ros.data.datasets.layouts import write_index, write_meta
    from vidseg_ros.data.datasets.public_layouts import open_source
    from vidseg_ros.training.data_setup import open_split
    root = _davis(tmp_path / 'davis', n=20)
    every = open_source(root, 'all')
    assert len(every.records) == 40 and open_source(root).records == every.records    # 'train' = all
    head, tail = open_source(root, 'head'), open_source(root, 'tail')
    assert len(head.records) == 2 * 14 and len(tail.records) == 2 * (20 - 14 - 5)
    assert open_source(root, 'b:tail', 'davis').records == [r for r in tail.records if r.sequence == 'b']
    assert open_split(_cfg(root), 'b:tail').records == open_source(root, 'b:tail').records
    with pytest.raises(ConfigError, match='no sequence c'):
        open_source(root, 'a,c')
    # an extracted dataset (index.csv) takes the same spellings
    (tmp_path / 'ds').mkdir()
    write_index(tmp_path / 'ds', open_source(root, 'a').records)
    write_meta(tmp_path / 'ds', {'classes': ['background', 'object'], 'ignore_index': 255})
    for layout in ('auto', 'folder', 'extracted'):
        got = open_source(tmp_path / 'ds', 'a:head', layout)
        assert [(r.sequence, r.index) for r in got.records] == [(r.sequence, r.index) for r in head.records
                                                                if r.sequence == 'a']
    (tmp_path / 'cv' / 'test').mkdir(parents=True)
    (tmp_path / 'cv' / 'testannot').mkdir()
    for seq in ('0001TP', '0006R0'):
        cv2.imwrite(str(tmp_path / 'cv' / 'test' / f'{seq}_000010.png'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match='splits here: test'):
        open_source(tmp_path / 'cv', 'val')
    assert len(open_source(tmp_path / 'cv', 'test').records) == 2
    assert [r.sequence for r in open_source(tmp_path / 'cv', 'test:0006R0').records] == ['0006R0']
    with pytest.raises(ConfigError, match='no sequence 0016E5'):
        open_source(tmp_path / 'cv', 'test:0016E5', 'camvid')
