"""Class table, remapping, colour mask and overlay."""
import json

import numpy as np
import pytest

from vidseg_ros.engine.outputs import ClassTable, colorize, overlay
from vidseg_ros.ros.stats import LatencyStats, RateMeter

NAMES = ['sky', 'road', 'car']
PALETTE = [[0, 0, 255], [128, 64, 128], [255, 0, 0]]


def test_remap_ignore_and_colours():
    t = ClassTable.build(NAMES, PALETTE, remap=[5, 6, 7], ignore=[0], ignore_value=255)
    ids = np.array([[0, 1], [2, 1]], np.uint8)
    assert t.mask_lut()[ids].tolist() == [[255, 6], [7, 6]]
    color = colorize(ids, t.color_lut())
    assert color[0, 0].tolist() == [0, 0, 0] and color[1, 0].tolist() == [255, 0, 0]
    table = json.loads(t.to_json())
    assert [c['id'] for c in table['classes']] == [255, 6, 7] and table['classes'][0]['ignored']


@pytest.mark.parametrize('kwargs, message', [
    (dict(remap=[1, 2]), 'class_remap has 2'), (dict(ignore=[3]), 'not model class ids'),
    (dict(name_override=['a']), 'class_names has 1'), (dict(remap=[1, 2, 300]), '0..255'),
])
def test_bad_overrides(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassTable.build(NAMES, PALETTE, **kwargs)


def test_overlay_blends_and_keeps_ignored_pixels():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    color = np.full((2, 2, 3), 200, np.uint8)
    keep = np.array([[True, False], [True, True]])
    out = overlay(rgb, color, 0.5, keep)
    assert out[0, 0].tolist() == [150] * 3 and out[0, 1].tolist() == [100] * 3


def test_latency_percentiles_and_rate():
    s = LatencyStats(window=100)
    for v in range(1, 101):
        s.add('model', float(v))
    summary = s.summary()['model']
    assert summary['p50'] == pytest.approx(50.5) and summary['max'] == 100.0
    r = RateMeter(window_s=10.0)
    for i in range(11):
        r.tick(now=100.0 + i * 0.1)
    assert r.rate_hz(now=101.0) == pytest.approx(10.0, rel=0.01)
