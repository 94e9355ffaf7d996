"""The model contract (models.contract): every registered model conforms to it, and a model written in
one file and registered under one name runs through training, export and the engine."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg_ros.config import ConfigError
from vidseg_ros.models import MODELS, create_model, register_model
from vidseg_ros.models.contract import (KINDS, FrameModel, KeyframeModel, RecurrentModel, SegmentationModel, StreamInfo,
                                        stream_info)

ROOT = Path(__file__).resolve().parents[2]
# a key-frame or recurrent class may degrade to kind 'frame' (no cached levels, no cells)
BASES = {'frame': SegmentationModel, 'keyframe': KeyframeModel, 'recurrent': RecurrentModel}
# Every registry entry with its defaults, plus the configurations that change the kind.
CASES = [(name, {}) for name in sorted(MODELS)] + [
    ('keyframe_fpn', {'cached_levels': 0}), ('keyframe_fpn', {'cached_levels': 1}),
    ('recurrent_unet', {'temporal_cell': 'none'}), ('recurrent_unet', {'size': 'small_shallow', 'temporal_levels': 2}),
    ('recurrent_fpn', {'temporal_cell': 'none'}),
]
# Kinds of the built-in configurations (a newly registered model is checked for conformance only).
EXPECTED_KIND = {('keyframe_fpn', ''): 'keyframe', ('keyframe_fpn', '0'): 'frame', ('keyframe_fpn', '1'): 'keyframe',
                 ('truncated_fpn', ''): 'frame', ('recurrent_unet', ''): 'recurrent',
                 ('recurrent_unet', 'none'): 'frame', ('recurrent_unet', 'small_shallow-2'): 'recurrent',
                 ('recurrent_fpn', ''): 'recurrent', ('recurrent_fpn', 'none'): 'frame'}


def check_conformance(model: torch.nn.Module) -> StreamInfo:
    """What the engine, export, training and fine-tuning rely on, checked against real forwards."""
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():   # zero-initialised layers (residual cells start as the twin) get weights,
        for p in model.parameters():   # so that 'the state matters' asks about a trained model
            if p.dim() > 1 and not p.any():
                p.normal_(std=0.1)
    info = stream_info(model)
    assert info.kind in KINDS and model.kind == info.kind
    assert isinstance(model, BASES[info.kind])
    assert StreamInfo.from_dict(info.to_dict(), 0) == info        # exported metadata round-trips
    s, os_, k = info.stride, info.output_stride, info.num_classes
    h, w = 2 * s, 3 * s
    x, x2 = torch.randn(1, 3, h, w), torch.randn(1, 3, h, w)
    assert isinstance(model.classifier, torch.nn.Conv2d) and model.classifier.out_channels == k
    with torch.no_grad():
        out = model.forward_step(x)
        logits = out[0]
        assert logits.shape == (1, k, h // os_, w // os_)
        full = model(x)
        assert full.shape == (1, k, h, w)
        if os_ == 1:
            torch.testing.assert_close(full, logits)
        with pytest.raises(ValueError, match='pad it to'):
            model(torch.randn(1, 3, h + 1, w))
        if info.kind == 'keyframe':
            assert len(out) == 1 and info.cache_tensors >= 1 and not info.state_layout
            key, *cache = model.forward_key(x)
            assert len(cache) == info.cache_tensors
            torch.testing.assert_close(key, logits)                               # key = full model
            torch.testing.assert_close(model.forward_current(x, *cache), logits)  # own cache = full model
            low = model.encode_low(x)                                             # the training split
            torch.testing.assert_close(model.decode(low, model.encode_high(low)), logits)
            assert not torch.allclose(model.forward_current(x2, *cache), model.forward_step(x2)[0])  # cache matters
        elif info.kind == 'recurrent':
            assert info.cache_tensors == 0 and info.state_layout
            state = model.init_state(1, h, w)
            assert [tuple(t.shape) for t in state] == [(1, c, h // f, w // f) for c, f in info.state_layout]
            assert len(out) == 1 + len(state)
            assert [t.shape for t in out[1:]] == [t.shape for t in state]
            torch.testing.assert_close(model.forward_step(x, *state)[0], logits)  # zeros = no state
            second = model.forward_step(x2, *out[1:])[0]
            clip = model(torch.stack([x, x2], 1))
            torch.testing.assert_close(clip[:, 1], torch.nn.functional.interpolate(
                second, size=(h, w), mode='bilinear', align_corners=False) if os_ > 1 else second)
            assert not torch.allclose(second, model.forward_step(x2)[0])          # the state matters
        else:
            assert len(out) == 1 and info.cache_tensors == 0 and not info.state_layout
    return info


def _key(name, kw):
    return name, '-'.join(str(v) for v in kw.values())


@pytest.mark.parametrize('name,kw', CASES, ids=['-'.join(filter(None, _key(n, k))) for n, k in CASES])
def test_every_registered_model_conforms(name, kw):
    assert set(EXPECTED_KIND) <= {_key(*c) for c in CASES}
    model = create_model(name, num_classes=5, **kw)
    info = check_conformance(model)
    assert info.kind == EXPECTED_KIND.get(_key(name, kw), info.kind)
    model.replace_classifier(2)                                      # what binary fine-tuning does
    assert model.arch_config['num_classes'] == 2
    assert check_conformance(model).num_classes == 2


def test_shipped_checkpoints_load_and_conform():
    from vidseg_ros.models.checkpoint import load_checkpoint
    shipped = sorted((ROOT / 'models').glob('*.pt'))
    assert shipped, 'models/*.pt are part of the package'
    kinds = {}
    for path in shipped:
        model, meta = load_checkpoint(path)
        kinds[path.stem] = check_conformance(model).kind
        assert stream_info(model).num_classes == len(meta['classes'])
    assert kinds.get('camvid_keyframe_fpn', 'keyframe') == 'keyframe'
    assert kinds.get('camvid_unet_cgru', 'recurrent') == 'recurrent'


def test_stream_info_rejects_inconsistent_values():
    with pytest.raises(ValueError, match='kind must be one of'):
        StreamInfo('video', 8, 1, 3)
    with pytest.raises(ValueError, match='must divide'):
        StreamInfo('frame', 8, 3, 3)
    with pytest.raises(ValueError, match='no key-frame cache'):
        StreamInfo('recurrent', 8, 1, 3, cache_tensors=2)
    with pytest.raises(ValueError, match='no recurrent state'):
        StreamInfo('keyframe', 8, 1, 3, state_layout=((4, 2),))
    with pytest.raises(TypeError, match='does not follow the model contract'):
        stream_info(torch.nn.Conv2d(3, 3, 1))


def test_registration_checks_the_contract():
    with pytest.raises(TypeError, match='must derive from'):
        register_model('plain_conv', torch.nn.Conv2d)
    with pytest.raises(ValueError, match='taken by KeyframeFPN'):
        register_model('keyframe_fpn', MODELS['recurrent_unet'])
    assert 'plain_conv' not in MODELS


class _NoPredict(FrameModel):
    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes, self.classifier = num_classes, torch.nn.Conv2d(3, num_classes, 1)


class _NoDecode(KeyframeModel):
    def encode_low(self, x):
        return (x,)

    def encode_high(self, low):
        return ()


class _NoAdvance(RecurrentModel):
    def state_layout(self):
        return [(4, 2)]


@pytest.mark.parametrize('cls, says', [(_NoPredict, 'FrameModel but does not implement predict'),
                                       (_NoDecode, 'KeyframeModel but does not implement decode'),
                                       (_NoAdvance, 'RecurrentModel but does not implement advance')])
def test_registration_refuses_a_model_that_leaves_a_core_method_of_its_kind_unimplemented(cls, says):
    """Registered, it failed only when run, as a bare NotImplementedError() (no message) out of training, export
    or the engine; unregistered, that error now names the method."""
    with pytest.raises(TypeError, match=f"model 'half': {cls.__name__} derives from {says}"):
        register_model('half', cls)
    assert 'half' not in MODELS
    if cls is _NoPredict:
        with pytest.raises(NotImplementedError, match='_NoPredict derives from FrameModel but does not implement '
                                                      'predict'):
            cls()(torch.zeros(1, 3, 8, 8))


def test_training_mode_must_fit_the_model():
    from vidseg_ros.training.config import TrainConfig
    from vidseg_ros.training.steps import StepRunner
    unet = create_model('recurrent_unet', size='small_shallow', num_classes=3)
    with pytest.raises(ConfigError, match='mode: keyframe needs .*encode_low.*recurrent_unet has none'):
        StepRunner(TrainConfig(mode='keyframe'), unet, torch.device('cpu'))
    with pytest.raises(ConfigError, match='mode: sequence needs .*step'):
        StepRunner(TrainConfig(mode='sequence'), create_model('keyframe_fpn', num_classes=3), torch.device('cpu'))


def test_truncated_encoder_reports_only_its_stages():
    trunc = create_model('truncated_fpn', removed_levels=2, width_mult=0.25)
    feats = trunc.encoder(torch.randn(1, 3, 32, 32))
    assert len(trunc.encoder.stages) == 2
    assert trunc.encoder.out_channels == tuple(f.shape[1] for f in feats)
    assert trunc.encoder.strides == (4, 8) == tuple(32 // f.shape[-1] for f in feats)


# -- a model in one file + one registry entry --------------------------------------------------------

@pytest.fixture(scope='module')
def toys():
    """test/core/toy_model.py's models, registered for this module only (one entry each)."""
    spec = importlib.util.spec_from_file_location('toy_model', Path(__file__).with_name('toy_model.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, cls in module.TOYS.items():
        register_model(name, cls)
    yield module.TOYS
    for name in module.TOYS:
        del MODELS[name]


TOY_MODES = {'toy_frame': ('perframe', 'frame'), 'toy_keyframe': ('keyframe', 'keyframe'),
             'toy_recurrent': ('sequence', 'recurrent')}
HW = (32, 32)   # training asks for multiples of 32 whatever the model stride


def _samples(mode: str, n: int = 2):
    g = torch.Generator().manual_seed(0)
    img = lambda *s: torch.rand(*s, generator=g)              # noqa: E731
    lab = lambda *s: torch.randint(0, 3, s, generator=g)     # noqa: E731
    if mode == 'perframe':
        return [{'image': img(3, *HW), 'label': lab(*HW)} for _ in range(n)]
    if mode == 'keyframe':
        return [{'key': img(3, *HW), 'current': img(3, *HW), 'label': lab(*HW), 'key_label': lab(*HW),
                 'distance': 2} for _ in range(n)]
    return [{'frames': img(3, 3, *HW), 'labels': lab(3, *HW), 'label_pos': 1} for _ in range(n)]


@pytest.mark.parametrize('name', sorted(TOY_MODES))
def test_toy_model_trains_exports_and_streams(toys, name, tmp_path):
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    from vidseg_ros.tools.export import export_onnx, export_torchscript
    from vidseg_ros.training.config import TrainConfig
    from vidseg_ros.training.loop import train
    pytest.importorskip('onnxruntime')
    mode, kind = TOY_MODES[name]
    assert check_conformance(create_model(name)).kind == kind
    # training builds the model from the registry name and writes a checkpoint
    ckpt = tmp_path / f'{name}.pt'
    cfg = TrainConfig(name=name, arch=name, mode=mode, dataset='folder', data_root=str(tmp_path), num_classes=3,
                      ignore_index=255, input_hw=list(HW), batch_size=2, epochs=1, val_split='', hflip=False,
                      seq_len=3, runs_dir=str(tmp_path / 'runs'), output=str(ckpt))
    out = train(cfg, train_set=_samples(mode))
    assert out['epochs'] == 1 and ckpt.is_file()
    # export reads the kind from the contract: key-frame models get a second (current-frame) graph
    onnx = export_onnx(ckpt, tmp_path / f'{name}.onnx')
    assert onnx['max_abs_diff'] < 1e-4 and len(onnx['files']) == (2 if kind == 'keyframe' else 1)
    assert export_torchscript(ckpt, tmp_path / f'{name}.ts')['max_abs_diff'] < 1e-4
    # the engine streams the checkpoint and its exports alike
    cfg = dict(device='cpu', keyframe_interval=2)
    engines = [StreamSegmenter.from_checkpoint(EngineConfig(model=str(p), **cfg))
               for p in (ckpt, tmp_path / f'{name}.onnx', tmp_path / f'{name}.ts')]
    assert [e.kind for e in engines] == [kind] * 3 and engines[0].stride == create_model(name).stride
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.integers(0, 255, (19, 29, 3), dtype=np.uint8)
        results = [e.step(img, i * 33_000_000, want_confidence=True) for e in engines]
        assert [r.is_key for r in results] == [i % 2 == 0 or kind != 'keyframe'] * 3
        assert results[0].class_ids.shape == (19, 29) and results[0].class_ids.max() < 3
        for r in results[1:]:
            np.testing.assert_allclose(r.confidence, results[0].confidence, atol=1e-4)
