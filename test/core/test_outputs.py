"""Class table, remapping, colour mask and overlay."""
import dataclasses
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


def test_colorize_is_the_lookup_for_every_id_and_layout():
    """Every one of the 256 ids through a random table, in the table's channel order (no BGR swap), also for
    a strided view of the ids."""
    lut = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    ids = np.arange(256, dtype=np.uint8).repeat(6).reshape(48, 32)
    np.testing.assert_array_equal(colorize(ids, lut), lut[ids])
    np.testing.assert_array_equal(colorize(ids[::2, 1::3], lut), lut[ids[::2, 1::3]])


@pytest.mark.parametrize('kwargs, message', [
    (dict(remap=[1, 2]), 'class_remap has 2'), (dict(ignore=[3]), 'not model class ids'),
    (dict(name_override=['a']), 'class_names has 1'), (dict(remap=[1, 2, 300]), '0..255'),
    (dict(name_override=['sky', 'ro\x1b[2Jad', 'car']), 'class_names hold control characters'),
    (dict(name_override=['sky', 'road', 'c' * 10_000]), 'class_names over 200 characters'),
])
def test_bad_overrides(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassTable.build(NAMES, PALETTE, **kwargs)


@pytest.mark.parametrize('kwargs, message', [
    # was "cannot reshape array of size 4 into shape (3)": neither the parameter nor the rule
    (dict(palette_override=[1, 2, 3, 4]), r'palette has 4 values: give 3 values \(r, g, b, each 0..255\) per '
                                          r'colour, one colour per class \(3 classes: 9 values\)'),
    (dict(palette_override=[1, 2, 3]), r'palette has 3 values: .*\(3 classes: 9 values\)'),
    (dict(palette_override=[0] * 8 + [256]), 'palette holds 256: give 3 values'),
    # was "palette has 3 colours for 4 classes", blaming the palette the user did not set
    (dict(name_override=NAMES + ['bus']), r'^class_names has 4 names, the model has 3 classes: give one name per'),
])
def test_override_errors_name_the_setting_and_its_rule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassTable.build(NAMES, PALETTE, **kwargs)


def test_palette_override_with_one_colour_per_class():
    t = ClassTable.build(NAMES, PALETTE, palette_override=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    assert t.palette.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


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


IDS = np.array([[0, 0, 1], [2, 2, 1]], np.uint8)
RGB = np.full((2, 3, 3), 100, np.uint8)


def _table():
    return ClassTable.build(NAMES, PALETTE)


def test_the_plan_follows_settings_and_subscribers():
    from vidseg_ros.engine.outputs import OUTPUTS, active_outputs, step_options
    from vidseg_ros.ros.settings import SegmentNodeConfig
    assert all(o.setting in SegmentNodeConfig.__dataclass_fields__ for o in OUTPUTS)
    cfg = SegmentNodeConfig()   # defaults: all on but class_prob (index -1)
    everyone = active_outputs(cfg, lambda name: True)
    assert [o.name for o in everyone] == ['mask', 'color_mask', 'overlay', 'confidence']
    assert step_options(everyone, cfg) == {'want_confidence': True, 'class_prob': None, 'confidence_u8': True}
    # nobody listens to the confidence: the engine computes no probabilities
    masks_only = active_outputs(cfg, lambda name: name != 'confidence')
    assert step_options(masks_only, cfg)['want_confidence'] is False
    cfg = dataclasses.replace(cfg, class_prob_index=2, confidence_encoding='32FC1', publish_overlay=False)
    plan = active_outputs(cfg, lambda name: True)
    assert [o.name for o in plan] == ['mask', 'color_mask', 'confidence', 'class_prob']
    assert step_options(plan, cfg) == {'want_confidence': True, 'class_prob': 2, 'confidence_u8': False}


def test_rendered_images_and_encodings():
    from vidseg_ros.engine.base import FrameResult
    from vidseg_ros.engine.outputs import OUTPUTS, Renderer, render_outputs
    from vidseg_ros.ros.settings import SegmentNodeConfig
    result = FrameResult(class_ids=IDS, confidence=np.full((2, 3), 255, np.uint8),
                         class_prob=np.full((2, 3), 0.25, np.float32))
    cfg = SegmentNodeConfig(confidence_encoding='32FC1', class_prob_index=1)
    images = render_outputs(list(OUTPUTS), Renderer(_table()), result, RGB, cfg)
    assert {k: v[1] for k, v in images.items()} == {'mask': 'mono8', 'color_mask': 'rgb8', 'overlay': 'rgb8',
                                                    'confidence': '32FC1', 'class_prob': '32FC1'}
    np.testing.assert_array_equal(images['mask'][0], IDS)
    assert images['color_mask'][0][1, 0].tolist() == [255, 0, 0]
    assert images['confidence'][0].dtype == np.float32 and images['confidence'][0].max() == 1.0
    # an output whose data the engine did not compute this frame is skipped, not published empty
    images = render_outputs(list(OUTPUTS), Renderer(_table()), FrameResult(class_ids=IDS), RGB, cfg)
    assert set(images) == {'mask', 'color_mask', 'overlay'}


def test_a_new_output_is_one_table_entry(monkeypatch):
    from vidseg_ros.engine import outputs
    from vidseg_ros.engine.base import FrameResult
    from vidseg_ros.ros.settings import SegmentNodeConfig

    def edges(frame):
        ids = frame.mask()
        return np.pad((ids[:, 1:] != ids[:, :-1]).astype(np.uint8) * 255, ((0, 0), (1, 0)))
    toy = outputs.Output('edges', 'publish_mask', 'mono8', edges)
    monkeypatch.setattr(outputs, 'OUTPUTS', outputs.OUTPUTS + (toy,))
    cfg = SegmentNodeConfig(publish_overlay=False)
    plan = outputs.active_outputs(cfg, lambda name: name in {'edges', 'overlay', 'mask'})
    assert [o.name for o in plan] == ['mask', 'edges']
    images = outputs.render_outputs(plan, outputs.Renderer(_table()), FrameResult(class_ids=IDS), RGB, cfg)
    assert images['edges'][1] == 'mono8'
    assert images['edges'][0].tolist() == [[0, 0, 255], [0, 0, 255]]
    off = outputs.active_outputs(dataclasses.replace(cfg, publish_mask=False), lambda name: True)
    assert 'edges' not in [o.name for o in off]   # its setting switches it off like any other


@pytest.mark.parametrize('input_hw', [[33, 47], [97, 8]])
def test_network_resolution_is_the_resized_frame_without_the_stride_padding(input_hw):
    """mask_resolution 'network' gave the padded network size (33x47 -> 64x64, 97x8 -> 128x32): the frame's
    content was stretched over it, changing its aspect."""
    import torch

    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.outputs import published_hw
    from vidseg_ros.engine.stream import StreamSegmenter
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta
    from vidseg_ros.ros.settings import SegmentNodeConfig
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', width_mult=0.25)
    eng = StreamSegmenter(model, default_meta('keyframe_fpn', model.arch_config, input_hw=(360, 480)),
                          EngineConfig(device='cpu', input_hw=input_hw))
    frame = np.zeros((120, 160, 3), np.uint8)
    assert eng.net_hw_for(frame.shape[:2]) != tuple(input_hw)   # padded to the stride
    network = SegmentNodeConfig(mask_resolution='network')
    assert published_hw(network, eng, frame.shape[:2]) == tuple(input_hw)
    assert eng.step(frame, output_hw=published_hw(network, eng, frame.shape[:2])).class_ids.shape == tuple(input_hw)
    assert published_hw(SegmentNodeConfig(mask_resolution='input'), eng, frame.shape[:2]) is None


def test_remap_and_ignore_value_take_the_whole_mono8_range():
    """0 (a background id) and 255 are mask values like any other; 256 and -1 fit no mono8 mask."""
    t = ClassTable.build(NAMES, PALETTE, remap=[0, 255, 0], ignore=[2], ignore_value=0)
    assert t.mask_lut()[:3].tolist() == [0, 255, 0]
    for bad in (dict(remap=[0, 256, 1]), dict(remap=[-1, 1, 2]), dict(ignore_value=256), dict(ignore_value=-1)):
        with pytest.raises(ValueError, match='0..255'):
            ClassTable.build(NAMES, PALETTE, **bad)


def test_palette_override_takes_0_and_255_and_refuses_beyond():
    t = ClassTable.build(NAMES, PALETTE, palette_override=[0, 0, 0, 255, 255, 255, 0, 255, 0])
    assert t.palette.tolist() == [[0, 0, 0], [255, 255, 255], [0, 255, 0]]
    for bad in ([-1] + [0] * 8, [0] * 8 + [256]):
        with pytest.raises(ValueError, match='palette holds'):
            ClassTable.build(NAMES, PALETTE, palette_override=bad)


def test_overlay_of_a_smaller_mask_shrinks_the_image_to_it():
    """mask_resolution 'network': the colour mask is smaller than the image; the overlay is at the mask's size,
    the image area-averaged onto it."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = 200
    color = np.zeros((2, 3, 3), np.uint8)
    out = overlay(rgb, color, 0.5)
    assert out.shape == (2, 3, 3)
    assert out[:, 0].tolist() == [[100] * 3] * 2 and out[:, 2].tolist() == [[0] * 3] * 2
