"""Losses: ignore index, class balancing, the key-frame triplet loss terms and weights."""
import math

import pytest
import torch

from support.tiny_models import TinyKeyframe

from vidseg_ros.training import losses as L


def test_segmentation_loss_ignores_and_upsamples():
    logits = torch.zeros(1, 3, 2, 2)
    target = torch.full((1, 4, 4), 9)
    target[0, 0, 0] = 1
    assert L.segmentation_loss(logits, target, ignore_index=9).item() == pytest.approx(math.log(3))
    allvoid = torch.full((1, 4, 4), 9)
    assert L.segmentation_loss(logits.requires_grad_(), allvoid, 9).item() == 0.0


def test_class_balanced_weights_inverse_frequency():
    target = torch.tensor([[[0, 0, 0, 1]]])
    w = L.class_balance_weights(target, 3, ignore_index=9)
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2, 0.0])
    # balanced loss: each present class contributes equally
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0] = 2.0
    plain = L.segmentation_loss(logits, target, 9)
    balanced = L.segmentation_loss(logits, target, 9, class_balanced=True)
    assert balanced > plain     # the rare, badly predicted class 1 weighs more


def test_triplet_loss_weights_by_distance():
    torch.manual_seed(0)
    model = TinyKeyframe(3)
    key, cur = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    y = torch.randint(0, 3, (2, 16, 16))
    out = L.triplet_outputs(model, key, cur)
    d = torch.tensor([1, 4])
    parts = L.keyframe_triplet_loss(out, y, y, d, ignore_index=255, feature_weight=0.01)
    cur_n = L._per_sample_nll(out['cached'], y, 255, False)
    key_n = L._per_sample_nll(out['key'], y, 255, False)
    self_n = L._per_sample_nll(out['self'], y, 255, False)
    feat = (out['high_cur'][0] - out['high_key'][0]).abs().flatten(1).mean(1)
    a = 1 / (d.float() + 1)
    expected = (a * cur_n + (1 - a) * (key_n + self_n) + 0.01 * feat).mean()
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-5)
    parts.total.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_triplet_identical_frames_have_no_feature_term():
    model = TinyKeyframe(3)
    x = torch.rand(1, 3, 16, 16)
    y = torch.randint(0, 3, (1, 16, 16))
    parts = L.keyframe_triplet_loss(L.triplet_outputs(model, x, x), y, y, torch.tensor([2]), 255)
    assert parts.feature.item() == 0.0
    assert parts.current.item() == pytest.approx(parts.self_key.item())


def test_sequence_loss_picks_labelled_step():
    logits = torch.zeros(2, 3, 2, 4, 4)
    logits[0, 1, 1] = 10.0     # clip 0, step 1: confident class 1
    logits[1, 2, 0] = 10.0     # clip 1, step 2: confident class 0
    target = torch.stack([torch.ones(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long)])
    good = L.sequence_loss(logits, target, torch.tensor([1, 2]), 255)
    bad = L.sequence_loss(logits, target, torch.tensor([0, 0]), 255)
    assert good < 1e-3 < bad
