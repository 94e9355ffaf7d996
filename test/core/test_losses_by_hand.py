"""Loss values worked out by hand at the edges users meet: an all-void crop, OHEM's smallest share, a sample with
a single labelled pixel under class balancing."""
import math

import pytest
import torch

from vidseg_ros.training import losses as L

VOID = 255


def test_an_all_void_crop_gives_zero_loss_and_zero_gradient_whatever_the_logits():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).mul(5).requires_grad_()
    loss = L.segmentation_loss(logits, torch.full((2, 4, 4), VOID), VOID, class_balanced=True)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()


@pytest.mark.parametrize('fraction', [0.25, 0.1])
def test_ohem_of_a_share_under_two_pixels_is_the_single_hardest_pixel(fraction):
    """4 labelled pixels: 0.25 of them is one pixel, 0.1 rounds to none and still takes one (the hardest)."""
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])      # the truth is class 0 everywhere
    nll = [math.log(1 + math.exp(z)) for z in (0.0, 1.0, 2.0, 3.0)]    # -log softmax_0 = log(1 + e^z)
    loss = L.segmentation_loss(logits, torch.zeros(1, 2, 2, dtype=torch.long), VOID, ohem_fraction=fraction)
    assert loss.item() == pytest.approx(max(nll))


def test_a_sample_with_one_labelled_pixel_scores_that_pixels_nll_under_class_balance():
    """Zero logits: every pixel's NLL is log 3, so each sample's weighted mean over its labelled pixels is log 3,
    whatever the class weights; sample 1 has a single labelled pixel of the batch's common class (weight 17 /
    (2 * 16) < 1, which its mean divides out again)."""
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[0, 0, 0] = 1                   # class 0: 15 + 1 pixels, class 1: 1
    y[1] = VOID
    y[1, 2, 2] = 0
    assert L.class_balance_weights(y, 3, VOID)[0].item() == pytest.approx(17 / (2 * 16))
    zeros = torch.zeros(2, 3, 4, 4)
    outputs = {'cached': zeros, 'key': zeros, 'self': zeros, 'high_key': None, 'high_cur': None}
    parts = L.keyframe_triplet_loss(outputs, y, y, torch.tensor([1, 1]), VOID, class_balanced=True)
    for term in (parts.current, parts.key, parts.self_key):
        assert term.item() == pytest.approx(math.log(3))
