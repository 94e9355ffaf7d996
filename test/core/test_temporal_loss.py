"""The temporal-consistency loss on real unlabelled clips (issue #16): flow, warp, trust mask, loss,
and a training run that takes its clips from an extracted dataset without labels."""
import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.config import ConfigError
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.temporal import backward_flows, temporal_consistency_loss, trusted, warp

H, W = 64, 96


def texture(seed=0, hw=(H, W + 40)):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 1, (*hw, 3)).astype(np.float32), (0, 0), 2.0) * 0.8 + 0.1


def panning_clip(n=4, step=2):
    """(1, n, 3, H, W): a camera panning ``step`` px to the right per frame over a fixed texture."""
    tex = texture()
    frames = [tex[:, 20 + step * t:20 + step * t + W] for t in range(n)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None]


def test_flow_and_warp_recover_a_pan():
    clip = panning_clip()
    flows = backward_flows(clip)
    assert flows.shape == (1, 3, H, W, 2)
    inner = flows[0, :, 8:-8, 8:-8]
    assert inner[..., 0].median().item() == pytest.approx(2.0, abs=0.3)    # t's pixel was 2 px right in t-1
    assert inner[..., 1].abs().median().item() < 0.3
    carried = warp(clip[0, :-1], flows[0])
    assert (carried - clip[0, 1:])[..., 8:-8, 8:-8].abs().mean() < 0.01
    assert trusted(clip, flows)[..., 8:-8, 8:-8].float().mean() > 0.95


def test_the_loss_is_low_for_masks_that_move_with_the_video_and_high_for_flicker():
    clip = panning_clip()
    flows = backward_flows(clip)
    # logits that are a function of the image content move with it; per-frame noise flickers
    follows = torch.cat([clip[:, :, :1] * 20 - 10, -clip[:, :, :1] * 20 + 10], 2)
    flicker = torch.randn(1, 4, 2, H, W) * 5
    low = temporal_consistency_loss(follows, clip, flows)
    high = temporal_consistency_loss(flicker, clip, flows)
    assert low < 0.1 < high
    static = clip[:, :1].expand(-1, 4, -1, -1, -1)
    assert temporal_consistency_loss(follows[:, :1].expand(-1, 4, -1, -1, -1), static) < 1e-5
    assert temporal_consistency_loss(flicker[:, :1], clip[:, :1]) == 0          # one frame: nothing to compare


def _unlabelled_video(root, n=8):
    """An extracted dataset with no labels: one sequence of a pan over a texture, 10 Hz."""
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    (root / 'images' / 'drive').mkdir(parents=True)
    tex = (texture(1, (H, W + 3 * n)) * 255).astype(np.uint8)
    recs = []
    for i in range(n):
        img = root / 'images' / 'drive' / f'{i}.png'
        cv2.imwrite(str(img), tex[:, 3 * i:3 * i + W])
        recs.append(FrameRecord('drive', i, img, None, i * 100_000_000, ''))
    write_index(root, recs)
    write_meta(root, {'classes': ['background', 'object'], 'ignore_index': 255})
    return root


def _labelled_clips(n=4):
    g = torch.Generator().manual_seed(0)
    return [{'frames': torch.rand(3, 3, H, W, generator=g), 'labels': torch.randint(0, 2, (3, H, W), generator=g),
             'label_pos': 2} for _ in range(n)]


def _cfg(tmp_path, **kw):
    base = dict(name='tc', arch='recurrent_fpn', arch_config={'width_mult': 0.25}, mode='sequence',
                dataset='folder', data_root=str(_unlabelled_video(tmp_path / 'video')), num_classes=2,
                ignore_index=255, input_hw=[H, W], seq_len=3, batch_size=2, epochs=1, val_split='',
                runs_dir=str(tmp_path / 'runs'), temporal_weight=1.0,
                temporal_data=str(tmp_path / 'video'), freeze=['encoder', 'laterals', 'outputs', 'head_proj'])
    base.update(kw)
    return TrainConfig(**base)


def test_training_takes_real_clips_from_an_unlabelled_recording(tmp_path):
    from vidseg_ros.training.loop import train
    seen = []
    cfg = _cfg(tmp_path)
    train(cfg, train_set=_labelled_clips(), callback=lambda e: seen.append(e) if e['kind'] == 'step' else None)
    assert len(seen) == 2 and all(np.isfinite(e['loss_temporal']) and e['loss_temporal'] >= 0 for e in seen)
    assert all(e['loss'] == pytest.approx(e['loss_labelled'] + e['loss_temporal'], rel=1e-5) for e in seen)


@pytest.mark.parametrize('change,message', [({'mode': 'perframe'}, 'needs mode: sequence'),
                                            ({'temporal_data': ''}, 'needs mode: sequence.*temporal_data'),
                                            ({'temporal_weight': -1.0}, 'must be >= 0')])
def test_a_temporal_loss_without_clips_to_take_it_on_is_refused(tmp_path, change, message):
    from vidseg_ros.training.config import validate
    with pytest.raises(ConfigError, match=message):
        validate(_cfg(tmp_path, **change))


def test_fewer_clips_than_a_batch_is_an_error_not_a_hang(tmp_path):
    from vidseg_ros.training.loop import train
    with pytest.raises(ConfigError, match='fewer clips than one batch'):
        train(_cfg(tmp_path, seq_len=3, batch_size=8), train_set=_labelled_clips(8))
