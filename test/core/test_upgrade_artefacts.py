"""Artefacts written by earlier versions of vidseg_ros, read by this one (the upgrade path).

Each artefact is built here in the format its version wrote, field by field, as checked against files made
by the old code in a worktree (first release 33a87c9, 32c19ac, 45776ae): a checkpoint whose train_config holds
the settings' old names, exports whose vidseg_meta lacks the fields added since (export_id, traced_hw,
state_shapes, num_classes, cache_tensors), a dataset.yaml of fps and ignore_index only and a variant's
``classes: []``. An upgrade must serve them as before (same masks, class names, normalisation) or refuse
them in one line that says what to do.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from vidseg_ros.data.datasets.layouts import FrameRecord, read_index, write_index
from vidseg_ros.data.datasets.public_layouts import open_source
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.exported_checks import META_KEY
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import FORMAT, default_meta, load_checkpoint
from vidseg_ros.tools.export import export_onnx, export_torchscript
from vidseg_ros.tools.exported_info import describe

CLASSES = ['floor', 'wall', 'person']
# what the first release (33a87c9) wrote into a checkpoint's provenance and train_config: the key-frame
# settings under their old names, none of the provenance keys added since (data_roots, hardware, selection)
FIRST_PROVENANCE = {'data': 'folder:all (ds2, read in place)', 'trained': True,
                    'training': 'vidseg train, 1 epochs, mode keyframe, input 64x64',
                    'date': '2026-11-21T10:30:00+00:00', 'command': '-c train kf.yaml',
                    'host': 'x86_64 torch 2.5.1+cpu', 'init_from': '', 'licence': 'CC0 own data'}
FIRST_TRAIN_CONFIG = {'name': 'kf', 'arch': 'keyframe_fpn', 'arch_config': {'cached_levels': 1, 'fpn_ch': 16},
                      'mode': 'keyframe', 'dataset': 'folder', 'data_root': 'ds2', 'num_classes': 3,
                      'ignore_index': 254, 'input_hw': [64, 64], 'key_distance': 3, 'key_distance_mode': 'random',
                      'motion_px': 2.0, 'epochs': 1, 'output': 'kf.pt'}
# the fields of an exported file's vidseg_meta in the first release (no export_id: a pair's two graphs were
# not tied to one export; no traced_hw / state_shapes)
FIRST_EXPORT_FIELDS = ('kind', 'meta', 'stride', 'output_stride', 'state_layout')


@pytest.fixture
def first_release_checkpoint(tmp_path):
    """A key-frame FPN checkpoint as the first release saved it (torch.save of format/state_dict/meta)."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=3, cached_levels=1, fpn_ch=16)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=CLASSES,
                        palette=[[10, 20, 30], [40, 50, 60], [70, 80, 90]], ignore_index=254,
                        input_hw=[64, 64], mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3],
                        metrics={'epoch': 1, 'step': 2, 'mIoU': 0.1})
    meta['provenance'], meta['train_config'] = dict(FIRST_PROVENANCE), dict(FIRST_TRAIN_CONFIG)
    path = tmp_path / 'kf.pt'
    torch.save({'format': FORMAT, 'state_dict': model.state_dict(), 'meta': meta}, path)
    return path


def _frames(n: int = 4):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(n)]


def _masks(model: str) -> list[np.ndarray]:
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=model, keyframe_interval=2))
    return [engine.step(f, i * 10**8).class_ids for i, f in enumerate(_frames())]


def _first_release_meta(text: str | bytes) -> str:
    info = json.loads(text)
    return json.dumps({k: info[k] for k in FIRST_EXPORT_FIELDS})


def test_a_first_release_checkpoint_serves_with_its_classes_and_normalisation(first_release_checkpoint):
    model, meta = load_checkpoint(first_release_checkpoint)
    assert meta['classes'] == CLASSES and meta['ignore_index'] == 254
    assert meta['mean'] == [0.5, 0.4, 0.3] and meta['std'] == [0.2, 0.25, 0.3]
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(first_release_checkpoint)))
    assert engine.classes == CLASSES and engine.kind == 'keyframe' and engine.ignore_index == 254
    assert engine.net_hw == (64, 64)


def test_a_first_release_onnx_pair_gives_its_checkpoint_s_masks(first_release_checkpoint, tmp_path):
    out = tmp_path / 'kf.onnx'
    export_onnx(first_release_checkpoint, out)
    for graph in (out, tmp_path / 'kf.current.onnx'):     # both graphs as the first release wrote them
        model = onnx.load(graph)
        (prop,) = [p for p in model.metadata_props if p.key == META_KEY]
        prop.value = _first_release_meta(prop.value)
        onnx.save(model, graph)
    want = _masks(str(first_release_checkpoint))
    got = _masks(str(out))
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    info = describe(out)
    assert info['meta']['classes'] == CLASSES and info['meta']['std'] == [0.2, 0.25, 0.3]
    assert info['partner']['present'] and info['partner']['same_export'] is None
    assert any('earlier version' in n for n in info['notes'])


def test_a_first_release_torchscript_export_gives_its_checkpoint_s_masks(first_release_checkpoint, tmp_path):
    out = tmp_path / 'kf.ts'
    export_torchscript(first_release_checkpoint, out)
    extra = {META_KEY + '.json': ''}
    module = torch.jit.load(str(out), _extra_files=extra)
    torch.jit.save(module, str(out),
                   _extra_files={META_KEY + '.json': _first_release_meta(extra[META_KEY + '.json'])})
    want = _masks(str(first_release_checkpoint))
    got = _masks(str(out))
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_a_first_release_dataset_and_an_old_variant_without_class_names_open(tmp_path):
    """dataset.yaml was fps and ignore_index only (no classes); a make-variant of such a dataset wrote
    ``classes: []`` and a noise_sigma key, and indexed its frames by absolute paths."""
    ds, var = tmp_path / 'ds', tmp_path / 'var'
    (ds / 'images' / 's').mkdir(parents=True)
    (ds / 'labels' / 's').mkdir(parents=True)
    records = []
    for i, frame in enumerate(_frames(3)):
        image, label = ds / 'images' / 's' / f'{i}.png', ds / 'labels' / 's' / f'{i}.png'
        cv2.imwrite(str(image), frame)
        cv2.imwrite(str(label), np.full((48, 64), i, np.uint8))
        records.append(FrameRecord('s', i, image, label, 1700000000000000000 + i * 10**8, 'human', bag='/old/bag',
                                   topic='/camera/image_raw', encoding='rgb8'))
    write_index(ds, records)
    (ds / 'dataset.yaml').write_text('fps: 10.0\nignore_index: 255\n')
    var.mkdir()
    write_index(var, records[1:])
    assert str(ds) in (var / 'index.csv').read_text()      # the variant's rows point into ds, absolutely
    (var / 'dataset.yaml').write_text('classes: []\nignore_index: 255\nfps: 10.0\nvariant: ds-noise2\n'
                                      'noise_sigma: 104.633\n')
    for root, n in ((ds, 3), (var, 2)):
        source = open_source(root, 'all')
        assert len(source.records) == n and source.class_names == [] and source.ignore_index == 255
        assert source.fps == 10.0
        assert [int(source.read_label(r).max()) for r in source.records] == list(range(3 - n, 3))
    assert [r.bag for r in read_index(ds)] == ['/old/bag'] * 3
