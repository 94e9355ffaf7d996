"""The key-frame policy makes key frames and resets where it should."""
import torch

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.policy import KEY_REASONS, KeyframePolicy, change_descriptor

MS = 1_000_000
HW = (48, 64)


def run(policy, n, stamps=None, hws=None, descs=None):
    out = []
    for i in range(n):
        stamp = stamps[i] if stamps else i * 33 * MS
        desc = descs[i] if descs else torch.zeros(1, 5, 3, 4)
        out.append(policy.decide(stamp, hws[i] if hws else HW, lambda d=desc: d))
    return out


def test_fixed_interval():
    d = run(KeyframePolicy(EngineConfig(keyframe_interval=5)), 12)
    assert [x.is_key for x in d] == [True, False, False, False, False, True] + [False] * 4 + [True, False]
    assert d[0].reset_reason == 'start' and d[5].key_reason == 'interval' and d[5].reset_reason == ''


def test_interval_one_is_every_frame():
    assert all(x.is_key for x in run(KeyframePolicy(EngineConfig(keyframe_interval=1)), 5))


def test_gap_backwards_resize_reset():
    p = KeyframePolicy(EngineConfig(keyframe_interval=100, max_gap_s=0.5))
    stamps = [0, 33, 66, 900, 933, 100, 133, 166, 200] + [233]
    stamps = [s * MS for s in stamps]
    hws = [HW] * 7 + [(50, 64)] + [(50, 64)] * 2
    d = run(p, 10, stamps=stamps, hws=hws)
    reasons = [x.reset_reason for x in d]
    assert reasons == ['start', '', '', 'gap', '', 'backwards', '', 'resize', '', '']
    assert [x.is_key for x in d] == [bool(r) for r in reasons]
    assert [x.key_reason for x in d] == reasons   # a reset is the key frame's reason
    p.reset()
    assert p.decide(300 * MS, (50, 64)).reset_reason == 'reset'


def test_network_geometry_change_resets():
    p = KeyframePolicy(EngineConfig(keyframe_interval=100))
    net, tiles = ((48, 64), (64, 64)), ((0, 0, 64, 64),)
    assert p.decide(None, HW, network=net, tiles=tiles).key_reason == 'start'
    assert not p.decide(None, HW, network=net, tiles=tiles).is_key
    d = p.decide(None, HW, network=((40, 60), (64, 64)), tiles=tiles)
    assert (d.is_key, d.reset_reason, d.key_reason) == (True, 'network_size', 'network_size')
    two = ((0, 0, 64, 32), (0, 32, 64, 32))
    assert p.decide(None, HW, network=((40, 60), (64, 64)), tiles=two).reset_reason == 'tiles'
    assert not p.decide(None, HW, network=((40, 60), (64, 64)), tiles=two).is_key


def test_uncached_models_key_every_frame_and_still_reset():
    p = KeyframePolicy(EngineConfig(keyframe_interval=100, max_gap_s=0.5))
    d = [p.decide(s * MS, HW, cached=False) for s in (0, 33, 66, 2000, 2033)]
    assert all(x.is_key for x in d)
    assert [x.key_reason for x in d] == ['start', 'every_frame', 'every_frame', 'gap', 'every_frame']
    assert [x.reset_reason for x in d] == ['start', '', '', 'gap', '']


def test_reasons_are_listed():
    assert len(set(KEY_REASONS)) == len(KEY_REASONS)
    assert {'start', 'reset', 'error', 'interval', 'adaptive', 'every_frame'} <= set(KEY_REASONS)


def test_no_stamp_disables_time_checks():
    p = KeyframePolicy(EngineConfig(keyframe_interval=100))
    d = [p.decide(None, HW) for _ in range(3)]
    assert [x.is_key for x in d] == [True, False, False] and [x.key_reason for x in d] == ['start', '', '']


def test_adaptive_threshold_and_max_interval():
    cfg = EngineConfig(keyframe_policy='adaptive', keyframe_threshold=0.2, keyframe_max_interval=6)
    base = torch.ones(1, 5, 3, 4)
    descs = [base, base * 1.05, base * 1.1, base * 1.5, base * 1.55, base * 1.6] + [base * 1.5] * 8
    d = run(KeyframePolicy(cfg), len(descs), descs=descs)
    keys = [i for i, x in enumerate(d) if x.is_key]
    # 0 start, 3 adaptive (+50%), then no change vs key 3 until max_interval forces frame 9
    assert keys == [0, 3, 9]
    assert d[3].key_reason == 'adaptive' and d[3].change > 0.2 and d[9].key_reason == 'max_interval'


def test_update_config_takes_effect():
    p = KeyframePolicy(EngineConfig(keyframe_interval=100))
    run(p, 3)
    p.update_config(EngineConfig(keyframe_interval=2))
    # 2 frames since the key already: the next one is due at once
    assert [p.decide(None, HW).is_key for _ in range(4)] == [True, False, True, False]


def test_descriptor_sees_scene_change():
    torch.manual_seed(0)
    a = torch.randn(1, 3, 64, 64)
    from vidseg_ros.engine.policy import relative_change
    da = change_descriptor(a)
    assert relative_change(change_descriptor(a + 0.01 * torch.randn_like(a)), da) < 0.05
    assert relative_change(change_descriptor(torch.randn(1, 3, 64, 64) * 2), da) > 0.3


def test_max_gap_zero_turns_gap_resets_off_as_documented():
    """max_gap_s 0 has always meant "no gap resets" (replayed data with irregular stamps); the setting's
    description (and the README table made from it) said only "a stamp gap larger than this resets"."""
    doc = EngineConfig.__dataclass_fields__['max_gap_s'].metadata['doc']
    assert '0 = no gap resets' in doc
    p = KeyframePolicy(EngineConfig(keyframe_interval=100, max_gap_s=0.0))
    stamps = [s * MS for s in (0, 33, 60_000, 120_000, 100)]
    assert [x.reset_reason for x in run(p, 5, stamps=stamps)] == ['start', '', '', '', 'backwards']


def test_new_edges_without_a_colour_change_make_an_adaptive_key_frame():
    """The descriptor's gradient energy is what sees texture the colour grid cannot: pixel-wide stripes
    (vertical, then horizontal) on a flat wall of the same mean colour, as a refocus or a striped object
    entering would give. Colour alone (the 16x16 means) does not change at all."""
    flat = torch.full((1, 3, 64, 96), 0.5)
    vertical, horizontal = flat.clone(), flat.clone()
    vertical[..., 1::2] = -0.5
    vertical[..., ::2] = 1.5
    horizontal[..., 1::2, :] = -0.5
    horizontal[..., ::2, :] = 1.5
    cfg = EngineConfig(keyframe_policy='adaptive')      # default threshold (0.2) and max interval
    for edges in (vertical, horizontal):
        p = KeyframePolicy(cfg)
        d = [p.decide(None, (64, 96), lambda x=x: change_descriptor(x)) for x in (flat, flat, edges)]
        assert [x.key_reason for x in d] == ['start', '', 'adaptive'] and d[1].change == 0.0
        assert d[2].change > 5 * cfg.keyframe_threshold


def test_a_gap_of_exactly_max_gap_s_does_not_reset():
    """"A stamp gap larger than this resets": with max_gap_s 0.3 (0.6, 0.7, 1.2, ...) a camera exactly at
    1/max_gap_s reset on every frame (300 ms * 1e-9 rounds above 0.3) while 0.5 s at 2 Hz did not."""
    for gap_s in (0.3, 0.5, 0.6, 0.7, 1.2):
        ns = round(gap_s * 1e9)
        p = KeyframePolicy(EngineConfig(keyframe_interval=100, max_gap_s=gap_s))
        stamps = [0, ns, 2 * ns, 3 * ns + 1]
        assert [x.reset_reason for x in run(p, 4, stamps=stamps)] == ['start', '', '', 'gap'], gap_s


def test_a_repeated_stamp_is_not_a_step_backwards():
    """Two frames with the same stamp (a driver stamping at its own low rate, a bag of duplicates) are not a
    bag looping: no reset."""
    p = KeyframePolicy(EngineConfig(keyframe_interval=100))
    stamps = [0, 33 * MS, 33 * MS, 66 * MS, 65 * MS]
    assert [x.reset_reason for x in run(p, 5, stamps=stamps)] == ['start', '', '', '', 'backwards']


def test_adaptive_threshold_is_a_strict_bound_and_max_interval_one_keys_every_frame():
    """"moved more than keyframe_threshold": threshold 0 keys on any change, not on an unchanged frame."""
    base = torch.ones(1, 5, 3, 4)
    descs = [base, base, base * 1.001, base * 1.001]
    d = run(KeyframePolicy(EngineConfig(keyframe_policy='adaptive', keyframe_threshold=0.0)), 4, descs=descs)
    assert [x.key_reason for x in d] == ['start', '', 'adaptive', '']
    every = EngineConfig(keyframe_policy='adaptive', keyframe_max_interval=1)
    assert all(x.is_key for x in run(KeyframePolicy(every), 4, descs=[base] * 4))


def test_descriptor_is_spatial_so_content_moving_registers():
    """Camera motion with the same global statistics (sky and ground swap places, a tilt) is a change: the
    descriptor keeps a coarse grid in both directions, not one row or column."""
    up = torch.zeros(1, 3, 64, 96)
    up[..., :32, :] = 1.0
    down = up.flip(-2)
    left = torch.zeros(1, 3, 64, 96)
    left[..., :48] = 1.0
    from vidseg_ros.engine.policy import relative_change
    assert relative_change(change_descriptor(down), change_descriptor(up)) > 0.5
    assert relative_change(change_descriptor(left.flip(-1)), change_descriptor(left)) > 0.5


def test_switching_to_adaptive_at_run_time_catches_the_next_cut():
    """The fixed policy keeps no descriptor of its key frames: after update_config to adaptive nothing but
    max_interval made a key frame (30 frames by default, up to 10000), a scene cut included."""
    torch.manual_seed(0)
    scene, cut = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96) * 2
    p = KeyframePolicy(EngineConfig(keyframe_interval=100))
    for _ in range(3):
        p.decide(None, (64, 96), lambda: change_descriptor(scene))
    p.update_config(EngineConfig(keyframe_policy='adaptive', keyframe_max_interval=1000))
    d = [p.decide(None, (64, 96), lambda x=x: change_descriptor(x)) for x in (scene, scene, cut, cut)]
    assert [x.key_reason for x in d] == ['', '', 'adaptive', '']
