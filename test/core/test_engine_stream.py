"""StreamSegmenter: shapes/dtypes, key-frame caching, recurrent state, fork, tiles, model resolution."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.policy import KEY_REASONS
from vidseg_ros.engine.stream import DEFAULT_MODEL, StreamSegmenter, resolve_model
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import CheckpointError, default_meta, save_checkpoint

MS = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


def frames(n, hw=(67, 101), seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
    return [np.clip(base.astype(int) + rng.integers(-5, 5, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def engine(arch='keyframe_fpn', meta_hw=(360, 480), **cfg):
    torch.manual_seed(0)
    kw = {'width_mult': 0.25} if arch != 'recurrent_unet' else {'size': 'small_shallow'}
    model = create_model(arch, **kw)
    cfg.setdefault('input_hw', [64, 96])
    meta = default_meta(arch, model.arch_config, input_hw=meta_hw)
    return StreamSegmenter(model, meta, EngineConfig(device='cpu', **cfg))


@pytest.mark.parametrize('arch', ['keyframe_fpn', 'recurrent_unet', 'recurrent_fpn', 'truncated_fpn'])
def test_output_shapes_for_odd_sizes(arch):
    eng = engine(arch, meta_hw=(), input_hw=[])  # network at the frame size, padded to the stride
    assert eng.net_hw == (0, 0)
    for i, img in enumerate(frames(2)):
        r = eng.step(img, i * 33 * MS, want_confidence=True, class_prob=3)
        assert r.class_ids.shape == (67, 101) and r.class_ids.dtype == np.uint8
        assert r.confidence.shape == (67, 101) and r.confidence.dtype == np.float32
        assert r.class_prob.shape == (67, 101) and 0 <= r.class_prob.min() <= r.class_prob.max() <= 1
        assert r.class_ids.max() < 11
        assert set(r.timings_ms) == {'preprocess', 'model', 'postprocess'}
    r = eng.step(frames(1)[0], 100 * MS, output_hw=(30, 40))
    assert r.class_ids.shape == (30, 40)
    assert eng.net_hw == (-(-67 // eng.stride) * eng.stride, -(-101 // eng.stride) * eng.stride)


def test_keyframe_engine_caches_and_matches_full_model():
    eng = engine(keyframe_interval=3)
    imgs = frames(7)
    results = [eng.step(img, i * 33 * MS) for i, img in enumerate(imgs)]
    assert [r.is_key for r in results] == [True, False, False, True, False, False, True]
    assert results[0].reset_reason == 'start'
    # the same frame repeated: current frames equal the key frame exactly (cache reused)
    eng.reset()
    r_key = eng.step(imgs[0], 0, want_confidence=True)
    r_cur = eng.step(imgs[0], 33 * MS, want_confidence=True)
    assert r_key.is_key and not r_cur.is_key and r_key.reset_reason == 'reset'
    np.testing.assert_array_equal(r_key.class_ids, r_cur.class_ids)
    np.testing.assert_allclose(r_key.confidence, r_cur.confidence, atol=1e-5)


def test_gap_resets_and_recurrent_always_key():
    eng = engine('recurrent_unet', input_hw=[32, 48])
    imgs = frames(3)
    r = [eng.step(imgs[0], 0), eng.step(imgs[1], 33 * MS), eng.step(imgs[2], 2000 * MS)]
    assert all(x.is_key for x in r) and [x.reset_reason for x in r] == ['start', '', 'gap']
    # after a reset the recurrent output equals a fresh engine's on the same frame
    fresh = engine('recurrent_unet', input_hw=[32, 48]).step(imgs[2], 0, want_confidence=True)
    eng.reset()
    again = eng.step(imgs[2], 0, want_confidence=True)
    np.testing.assert_allclose(fresh.confidence, again.confidence, atol=1e-5)


def test_fork_has_independent_state():
    a = engine('recurrent_unet', input_hw=[32, 48])
    imgs = frames(3)
    b = a.fork()
    assert b._runner is a._runner
    for i, img in enumerate(imgs):
        a.step(img, i * 33 * MS)
    rb = b.step(imgs[0], 0, want_confidence=True)   # b starts fresh despite a's history
    ref = engine('recurrent_unet', input_hw=[32, 48]).step(imgs[0], 0, want_confidence=True)
    np.testing.assert_allclose(rb.confidence, ref.confidence, atol=1e-5)
    assert rb.reset_reason == 'start'


def test_tiles_agree_with_whole_image():
    img = frames(1, hw=(96, 128))[0]
    whole = engine('truncated_fpn', input_hw=[96, 128]).step(img, 0)
    tiled_engine = engine('truncated_fpn', input_hw=[96, 128], tile_size=64, tile_stride=32)
    tiled = tiled_engine.step(img, 0)
    assert len(tiled_engine._state) == 6  # 2 x 3 tiles
    agree = (whole.class_ids == tiled.class_ids).mean()
    assert agree > 0.8, agree
    kf = engine('keyframe_fpn', input_hw=[96, 128], tile_size=64, tile_stride=32)
    rs = [kf.step(img, i * 33 * MS) for i in range(3)]
    assert [r.is_key for r in rs] == [True, False, False]
    np.testing.assert_array_equal(rs[0].class_ids, rs[1].class_ids)


def test_tile_size_below_the_stride_is_rounded_up_with_one_warning(caplog):
    """tile_size 1 ran 6 stride-sized tiles of this input (108 of a 288x384 one) without a word."""
    caplog.set_level('WARNING', logger='vidseg_ros.engine.stream')
    eng = engine('truncated_fpn', input_hw=[64, 96], tile_size=1)
    tile = eng.stride
    rounded = [r.getMessage() for r in caplog.records if 'tile_size' in r.getMessage()]
    assert len(rounded) == 1 and f'tiles of {tile}x{tile}' in rounded[0] and 'tile_size 1 ' in rounded[0]
    eng.step(frames(1, hw=(64, 96))[0], 0)
    assert len(eng._state) == (64 // tile) * (96 // tile)    # the rounding itself is kept (docs/models.md)
    caplog.clear()
    eng.fork()                                               # one warning per engine, not per camera
    eng.update_config(dataclasses.replace(eng.config, keyframe_interval=3))
    eng.update_config(dataclasses.replace(eng.config, tile_size=2 * tile))
    assert not [r for r in caplog.records if 'tile_size' in r.getMessage()]
    eng.update_config(dataclasses.replace(eng.config, tile_size=tile + 1))
    assert [f'tiles of {2 * tile}x{2 * tile}' in r.getMessage() for r in caplog.records] == [True]


def test_compile_says_the_first_frames_take_longer(caplog, monkeypatch):
    """compile: true held warm-up for ~90 s on a CPU without a word: the node looked hung."""
    compiled = []
    monkeypatch.setattr(torch, 'compile', lambda fn, **kw: compiled.append(fn) or fn)   # fast: no real compile
    caplog.set_level('WARNING', logger='vidseg_ros.engine.backends')
    engine('keyframe_fpn', compile=True)
    said = [r for r in caplog.records if 'torch.compile' in r.getMessage()]
    assert len(said) == 1 and 'first frames take longer' in said[0].getMessage() and compiled
    caplog.clear()
    engine('keyframe_fpn')
    assert not [r for r in caplog.records if 'torch.compile' in r.getMessage()]


def test_properties_and_update_config():
    eng = engine()
    assert eng.classes[0] == 'Sky' and eng.palette.shape == (11, 3) and eng.palette.dtype == np.uint8
    assert eng.ignore_index == 11 and eng.device == 'cpu' and eng.trained is False
    assert eng.net_hw == (64, 96) and eng.kind == 'keyframe' and 'keyframe_fpn' in eng.model_name
    cfg = EngineConfig(device='cpu', input_hw=[64, 96], keyframe_interval=2)
    eng.update_config(cfg)
    assert [eng.step(img).is_key for img in frames(4)] == [True, False, True, False]
    with pytest.raises(ValueError, match='needs a new engine'):
        eng.update_config(EngineConfig(device='cpu', precision='bf16'))


def test_bf16_and_channels_last_run():
    eng = engine(precision='bf16', channels_last=True)
    r = eng.step(frames(1)[0])
    assert r.class_ids.shape == (67, 101)


def test_model_resolution(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match='looked for'):
        resolve_model('no_such_model_name')
    with pytest.raises(CheckpointError, match='not found'):
        resolve_model(str(tmp_path / 'x.pt'))
    assert resolve_model('untrained:recurrent_unet') == 'untrained:recurrent_unet'
    model = create_model('truncated_fpn', width_mult=0.25)
    path = save_checkpoint(tmp_path / 'm.pt', model, default_meta('truncated_fpn', model.arch_config,
                                                                  provenance={'trained': True}))
    eng = StreamSegmenter.from_checkpoint(EngineConfig(model=str(path), device='cpu'))
    assert eng.trained and eng.model_name == 'truncated_fpn (m.pt)' and eng.net_hw == (360, 480)
    import vidseg_ros.engine.model_paths as model_paths
    import vidseg_ros.engine.stream as stream
    monkeypatch.setattr(model_paths, 'REPO_MODELS', tmp_path)
    monkeypatch.setattr(stream, 'model_dirs', lambda: [tmp_path])
    (tmp_path / f'{DEFAULT_MODEL}.pt').write_bytes(path.read_bytes())
    assert resolve_model('') == str(tmp_path / f'{DEFAULT_MODEL}.pt')
    assert resolve_model('m') == str(path)


def test_untrained_demo_model():
    eng = StreamSegmenter.from_checkpoint(EngineConfig(model='untrained:keyframe_fpn', device='cpu',
                                                       input_hw=[64, 96]))
    assert not eng.trained and eng.meta['provenance']['trained'] is False
    assert eng.step(frames(1)[0]).class_ids.shape == (67, 101)


def test_adaptive_policy_keys_on_scene_cut():
    eng = engine(keyframe_policy='adaptive', keyframe_threshold=0.2, keyframe_max_interval=50)
    still = frames(4)
    h, w = still[0].shape[:2]
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]  # a structured, different scene
    cut = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8).copy()
    keys = [eng.step(img, i * 33 * MS).is_key for i, img in enumerate(still + [cut] + still[:2])]
    assert keys == [True, False, False, False, True, True, False]  # cut, then cut back


def test_warmup_leaves_a_fresh_stream():
    eng = engine()
    eng.warmup()
    r = eng.step(frames(1)[0], 0)
    assert r.is_key and r.reset_reason == 'start'
    with pytest.raises(ValueError, match='image_hw'):
        engine(meta_hw=(), input_hw=[]).warmup()


def _steps(eng, items):
    """key_reason of each (frame, stamp_ms) in ``items``; a callable item acts on the engine between frames."""
    out = []
    for item in items:
        if callable(item):
            item(eng)
        else:
            img, ms = item
            r = eng.step(img, ms * MS)
            assert r.is_key == bool(r.key_reason)   # a reason exactly for key frames
            out.append(r.key_reason)
    return out


def _boom(eng):
    def fail(*a, **k):
        raise RuntimeError('device lost')
    eng._infer = fail
    with pytest.raises(RuntimeError):
        eng.step(frames(1)[0], 66 * MS)
    del eng._infer


IMG, OTHER_SIZE = frames(1)[0], frames(1, hw=(50, 70))[0]
STILL = frames(4)
CUT = np.broadcast_to(np.linspace(0, 255, 101, dtype=np.float32)[None, :, None], (67, 101, 3)).astype(np.uint8)
# reason -> (engine settings, steps, the key_reason of each frame); between frames: a reset, a failed
# step, or a run-time setting change
KEY_REASON_CASES = {
    'start': ({}, [(IMG, 0)], ['start']),
    'reset': ({}, [(IMG, 0), (IMG, 33), lambda e: e.reset(), (IMG, 66)], ['start', '', 'reset']),
    'error': ({}, [(IMG, 0), (IMG, 33), _boom, (IMG, 99)], ['start', '', 'error']),
    'resize': ({'input_hw': []}, [(IMG, 0), (IMG, 33), (OTHER_SIZE, 66)], ['start', '', 'resize']),
    'network_size': ({}, [(IMG, 0), lambda e: e.update_config(dataclasses.replace(e.config, input_hw=[32, 64])),
                          (IMG, 33)], ['start', 'network_size']),
    'tiles': ({}, [(IMG, 0), lambda e: e.update_config(dataclasses.replace(e.config, tile_size=32)), (IMG, 33)],
              ['start', 'tiles']),
    'backwards': ({}, [(IMG, 100), (IMG, 133), (IMG, 0)], ['start', '', 'backwards']),
    'gap': ({}, [(IMG, 0), (IMG, 33), (IMG, 2000)], ['start', '', 'gap']),
    'interval': ({'keyframe_interval': 2}, [(IMG, 0), (IMG, 33), (IMG, 66)], ['start', '', 'interval']),
    'max_interval': ({'keyframe_policy': 'adaptive', 'keyframe_max_interval': 3},
                     [(im, 33 * i) for i, im in enumerate(STILL)], ['start', '', '', 'max_interval']),
    'adaptive': ({'keyframe_policy': 'adaptive', 'keyframe_max_interval': 50},
                 [(STILL[0], 0), (STILL[1], 33), (CUT, 66)], ['start', '', 'adaptive']),
    'every_frame': ({'arch': 'recurrent_unet', 'input_hw': [32, 48]}, [(IMG, 0), (IMG, 33)], ['start', 'every_frame']),
}


@pytest.mark.parametrize('reason', KEY_REASON_CASES)
def test_each_key_reason_reaches_the_frame_result(reason):
    settings, items, expected = KEY_REASON_CASES[reason]
    settings = dict(settings)
    arch = settings.pop('arch', 'keyframe_fpn')
    eng = engine(arch, **({'meta_hw': ()} if settings.get('input_hw') == [] else {}), **settings)
    assert _steps(eng, items) == expected


def test_every_key_reason_has_a_case():
    assert set(KEY_REASON_CASES) == set(KEY_REASONS)


def test_preprocess_works_outside_step_after_a_step():
    """preprocess() is public (the key-frame benches call it): its reused buffer, made under step()'s
    inference mode, must not refuse a later call from plain code."""
    eng = engine()
    img = frames(1)[0]
    eng.step(img)
    x, valid_hw = eng.preprocess(img)
    assert tuple(x.shape[-2:]) == eng.net_hw and valid_hw == (64, 96)


def test_a_read_only_frame_is_segmented_without_a_warning():
    """A frame at the network size goes to torch without a resize; a read-only one (np.frombuffer of a
    message's bytes) made torch warn of undefined behaviour, once per process, so a fresh process checks it."""
    code = ('import numpy as np, torch\n'
            'from vidseg_ros.engine.base import EngineConfig\n'
            'from vidseg_ros.engine.stream import StreamSegmenter\n'
            'from vidseg_ros.models import create_model\n'
            'from vidseg_ros.models.checkpoint import default_meta\n'
            'm = create_model("keyframe_fpn", width_mult=0.25)\n'
            'eng = StreamSegmenter(m, default_meta("keyframe_fpn", m.arch_config), '
            'EngineConfig(device="cpu", input_hw=[64, 96]))\n'
            'img = np.frombuffer(bytes(64 * 96 * 3), np.uint8).reshape(64, 96, 3)\n'
            'assert not img.flags.writeable\n'
            'assert eng.step(img).class_ids.shape == (64, 96)\n')
    proc = subprocess.run([sys.executable, '-W', 'error', '-c', code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-1500:]


@pytest.mark.parametrize('bad', [{'class_prob': 11}, {'class_prob': -1}, {'output_hw': (0, 0)},
                                 {'output_hw': (-5, 10)}, {'image': np.zeros((0, 5, 3), np.uint8)}])
def test_a_refused_request_leaves_the_stream_as_it_was(bad):
    """A bad class index or output size is refused before the model runs: the key-frame schedule and the
    masks that follow are those of a stream that never saw the call (it used to run the frame first)."""
    imgs = frames(5)
    ref, eng = engine(keyframe_interval=3), engine(keyframe_interval=3)
    want = [ref.step(img, i * 33 * MS) for i, img in enumerate(imgs)]
    eng.step(imgs[0], 0)
    with pytest.raises(ValueError, match='class_prob|output_hw|empty image'):
        eng.step(bad.pop('image', imgs[1]), 33 * MS, **bad)
    got = [want[0]] + [eng.step(img, i * 33 * MS) for i, img in enumerate(imgs) if i]
    assert [r.is_key for r in got] == [r.is_key for r in want]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.class_ids, b.class_ids)


@pytest.mark.parametrize('device', ['meta', 'mps', 'xpu', 'cpu:1', 'CPU'])
def test_the_engine_takes_only_the_devices_the_node_takes(device):
    """resolve_device took any torch device type: mps failed with a RuntimeError, xpu with an
    AssertionError, cpu:1 ran; the node's check refused them all. Now one check: auto, cpu, cuda, cuda:N."""
    model = create_model('truncated_fpn', width_mult=0.25)
    meta = default_meta('truncated_fpn', model.arch_config, input_hw=(64, 96))
    with pytest.raises(ValueError, match=f'device {device!r}'):
        StreamSegmenter(model, meta, EngineConfig(device=device))


@pytest.mark.parametrize('bad, message', [
    (dict(keyframe_policy='foo'), "keyframe_policy: 'foo' is not one of 'fixed', 'adaptive'"),   # ran adaptive
    (dict(precision='fp64'), "precision: 'fp64' is not one of"),                                # KeyError
    (dict(input_hw=[100]), 'input_hw: 1 values given, expected 0 or 2'),                        # IndexError
    (dict(input_hw=[0, 0]), r'input_hw: 0 is out of range 8\.\.8192'),                           # OpenCV assertion
    (dict(tile_size=-5), r'tile_size: -5 is out of range 0\.\.8192'),                           # accepted
    (dict(keyframe_interval=0), r'keyframe_interval: 0 is out of range 1\.\.10000'),             # accepted
])
def test_the_engine_checks_its_settings_like_yaml_and_ros_do(bad, message):
    """The Python API took any EngineConfig: each of these failed late and obscurely, or ran silently."""
    from vidseg_ros.config import ConfigError
    with pytest.raises(ConfigError, match=message):
        engine(**bad)
    eng = engine()
    with pytest.raises(ConfigError, match=message):
        eng.update_config(dataclasses.replace(eng.config, **bad))
    assert eng.config.keyframe_interval == 5 and eng.step(frames(1)[0]).is_key   # unchanged, still serving
    with pytest.raises(ConfigError, match=message):
        StreamSegmenter.from_checkpoint(EngineConfig(model='no_such_model', **bad))   # before the model is looked up


def _nan_like(value):
    """The same structure of tensors, every one NaN."""
    if isinstance(value, torch.Tensor):
        return torch.full_like(value, float('nan'))
    return type(value)(_nan_like(v) for v in value) if isinstance(value, (list, tuple)) else value


def test_a_frame_whose_logits_are_nan_gets_no_mask_and_the_next_starts_afresh(monkeypatch):
    """An fp16 overflow on one frame gave a constant class-0 mask with NaN confidence, and the recurrent state
    carried the NaN to every later frame: now that frame raises NonFiniteOutput (the node logs it and publishes
    nothing) and the next frame is a key frame with the state cleared, as a fresh engine gives it."""
    from vidseg_ros.engine.base import NonFiniteOutput
    eng, imgs = engine('recurrent_unet'), frames(3)
    eng.step(imgs[0], 0)
    runner, healthy = eng._runner, eng._runner.step
    monkeypatch.setattr(runner, 'step', lambda x, state: _nan_like(healthy(x, state)))
    with pytest.raises(NonFiniteOutput, match='NaN or inf'):
        eng.step(imgs[1], 33 * MS)
    monkeypatch.setattr(runner, 'step', healthy)
    r = eng.step(imgs[2], 66 * MS, want_confidence=True)
    assert (r.is_key, r.reset_reason) == (True, 'error')
    fresh = engine('recurrent_unet').step(imgs[2], 66 * MS, want_confidence=True)
    np.testing.assert_array_equal(r.class_ids, fresh.class_ids)
    assert np.isfinite(r.confidence).all()
