"""The fast OpenCV post-processing matches the torch (bilinear logits, then softmax/argmax) reference."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg_ros.engine.stream import _resize_logits_cv


@pytest.mark.parametrize('net_hw, valid_hw, out_hw', [((32, 48), (32, 48), (75, 101)),
                                                      ((32, 48), (29, 41), (58, 82)),
                                                      ((32, 48), (32, 48), (32, 48))])
def test_cv_resize_matches_torch(net_hw, valid_hw, out_hw):
    torch.manual_seed(0)
    logits = torch.randn(1, 11, 8, 12)
    ref = logits
    if valid_hw != net_hw:
        ref = F.interpolate(ref, size=net_hw, mode='bilinear', align_corners=False)[..., :valid_hw[0], :valid_hw[1]]
    ref = F.interpolate(ref, size=out_hw, mode='bilinear', align_corners=False)[0].permute(1, 2, 0).numpy()
    got = _resize_logits_cv(logits[0], net_hw, valid_hw, out_hw)
    assert got.shape == (*out_hw, 11)
    np.testing.assert_allclose(got, ref, atol=1e-4)
