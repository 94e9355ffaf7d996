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
    right, wrong = math.log(math.exp(2) + 2) - 2, math.log(math.exp(2) + 2)   # NLL of class 0, of class 1
    assert plain.item() == pytest.approx((3 * right + wrong) / 4)
    assert balanced.item() == pytest.approx((right + wrong) / 2)   # each present class weighs the same


@pytest.mark.parametrize('class_balanced', [False, True])
def test_triplet_loss_weights_by_distance(class_balanced):
    """Each term is torch's CE of its sample (class-balanced: with the weights of the batch's labels)."""
    torch.manual_seed(0)
    model = TinyKeyframe(3)
    key, cur = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    y, y_key = torch.randint(0, 3, (2, 16, 16)), torch.randint(0, 3, (2, 16, 16))
    y[1, :12] = 255                                   # sample 1: a quarter of its pixels labelled
    d = torch.tensor([1, 4])
    parts = L.keyframe_triplet_loss(L.triplet_outputs(model, key, cur), y, y_key, d, ignore_index=255,
                                    feature_weight=0.01, class_balanced=class_balanced)
    expected = []
    with torch.no_grad():
        for i, a in enumerate((1 / 2, 1 / 5)):        # a_d = 1 / (d + 1)
            low_k, low_c = model.encode_low(key[i:i + 1]), model.encode_low(cur[i:i + 1])
            high_k, high_c = model.encode_high(low_k), model.encode_high(low_c)

            def nll(logits, labels):                  # torch's mean CE over the labelled pixels, at label size
                up = torch.nn.functional.interpolate(logits, size=(16, 16), mode='bilinear', align_corners=False)
                weight = L.class_balance_weights(labels, 3, 255) if class_balanced else None
                return torch.nn.functional.cross_entropy(up, labels[i:i + 1], weight=weight, ignore_index=255).item()
            cached, key_loss = nll(model.decode(low_c, high_k), y), nll(model.decode(low_k, high_k), y_key)
            self_loss = nll(model.decode(low_c, high_c), y)
            feature = (high_c[0] - high_k[0]).abs().mean().item()
            expected.append(a * cached + (1 - a) * (key_loss + self_loss) + 0.01 * feature)
    assert parts.total.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
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
