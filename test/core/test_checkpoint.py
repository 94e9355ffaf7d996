"""Checkpoint round trip, meta contract, and clear errors for bad files."""
import pytest
import torch

from vidseg_ros.models import create_model
from vidseg_ros.constants import CAMVID_CLASSES, CAMVID_PALETTE
from vidseg_ros.models.checkpoint import (CheckpointError, default_meta,
                                          load_checkpoint, read_checkpoint, save_checkpoint)


@pytest.fixture()
def saved(tmp_path):
    model = create_model('keyframe_fpn', num_classes=11, width_mult=0.25)
    meta = default_meta('keyframe_fpn', model.arch_config, metrics={'miou': 0.5},
                        provenance={'trained': True, 'data': 'unit test'})
    path = save_checkpoint(tmp_path / 'm.pt', model, meta)
    return path, model


def test_round_trip(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert meta['arch'] == 'keyframe_fpn' and meta['arch_config']['width_mult'] == 0.25
    assert meta['classes'] == CAMVID_CLASSES and meta['palette'] == CAMVID_PALETTE
    assert meta['ignore_index'] == 11 and meta['input_hw'] == [360, 480]
    assert meta['provenance']['trained'] is True and meta['metrics'] == {'miou': 0.5}
    assert not loaded.training
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw['format'] == 'vidseg_ros/1'


def test_default_meta_constants():
    assert len(CAMVID_CLASSES) == 11 and len(CAMVID_PALETTE) == 11
    meta = default_meta('recurrent_unet', {'size': 'small_shallow'}, classes=['bg', 'fg'],
                        palette=[[0, 0, 0], [255, 0, 0]], ignore_index=None)
    assert meta['arch_config']['num_classes'] == 2 and meta['arch_config']['temporal_cell'] == 'cgru'
    assert meta['provenance']['trained'] is False and meta['train_config'] == {}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_checkpoint(tmp_path / 'none.pt')


def test_not_a_torch_file(tmp_path):
    p = tmp_path / 'text.pt'
    p.write_text('hello, not a checkpoint')
    with pytest.raises(CheckpointError, match='not a'):
        load_checkpoint(p)


def test_a_torchscript_export_named_pt_says_to_name_it_ts(tmp_path):
    """It gave torch's UserWarning (a second stderr line, "call torch.jit.load directly") and "not a torch
    checkpoint or is corrupt (Cannot use weights_only=True with TorchScript archives...)"."""
    import warnings
    path = tmp_path / 'exported.pt'
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 2, 1)), str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(CheckpointError, match=r'exported\.pt is a TorchScript export, not a checkpoint: name it '
                                                  r'exported\.ts'):
            load_checkpoint(path)
    assert [str(w.message) for w in caught if 'TorchScript' in str(w.message)] == []


def test_truncated(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / 'cut.pt'
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt|not a torch'):
        load_checkpoint(bad)


def test_plain_state_dict_is_rejected(tmp_path):
    p = tmp_path / 'sd.pt'
    torch.save(create_model('truncated_fpn').state_dict(), p)
    with pytest.raises(CheckpointError, match='not a vidseg_ros checkpoint'):
        load_checkpoint(p)


def test_pickled_object_is_refused(tmp_path):
    p = tmp_path / 'obj.pt'
    torch.save({'format': 'vidseg_ros/1', 'state_dict': {}, 'meta': {'x': object()}}, p)
    with pytest.raises(CheckpointError, match='weights_only'):
        load_checkpoint(p)


def test_unknown_arch_and_missing_meta(saved, tmp_path):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta']['arch'] = 'segformer'
    torch.save(raw, tmp_path / 'arch.pt')
    with pytest.raises(CheckpointError, match="unknown architecture 'segformer'"):
        load_checkpoint(tmp_path / 'arch.pt')
    del raw['meta']['classes']
    torch.save(raw, tmp_path / 'meta.pt')
    with pytest.raises(CheckpointError, match='meta lacks classes'):
        read_checkpoint(tmp_path / 'meta.pt')


def test_state_dict_mismatch_names_keys(saved, tmp_path):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta']['arch_config']['fpn_ch'] = 32
    torch.save(raw, tmp_path / 'shape.pt')
    with pytest.raises(CheckpointError, match=r'shape mismatch.*laterals\.1\.weight'):
        load_checkpoint(tmp_path / 'shape.pt')
    raw = torch.load(path, weights_only=True)
    raw['state_dict'].pop('classifier.weight')
    torch.save(raw, tmp_path / 'keys.pt')
    with pytest.raises(CheckpointError, match='missing key.*classifier.weight'):
        load_checkpoint(tmp_path / 'keys.pt')


def test_save_rejects_non_plain_meta(tmp_path):
    import numpy as np
    model = create_model('truncated_fpn')
    meta = default_meta('truncated_fpn', model.arch_config, metrics={'miou': np.float32(0.3)})
    with pytest.raises(CheckpointError, match='metrics.miou: float32 is not a plain value'):
        save_checkpoint(tmp_path / 'x.pt', model, meta)
    with pytest.raises(CheckpointError, match='meta lacks'):
        save_checkpoint(tmp_path / 'y.pt', model, {'classes': []})


# One bad meta value per case (the saved fixture: keyframe_fpn, 11 CamVid classes): every reader refuses
# it with the file, the key and the value, instead of running with it (garbage scores) or crashing.
BAD_META = [
    ('input_hw', '96x64', r"meta\.input_hw: expected a list, got str '96x64'"),
    ('input_hw', [100000, 100000], r'meta\.input_hw: 100000 is out of range 8\.\.8192'),
    ('input_hw', [4096, 8192], r'meta\.input_hw: 4096x8192 = 33554432 pixels exceeds max_input_pixels'),
    ('input_hw', [0, 0], r'meta\.input_hw: 0 is out of range'),
    ('input_hw', [96], r'meta\.input_hw: 1 values given, expected 0 or 2'),
    ('input_hw', [96.5, 64], r'meta\.input_hw\[0\]: expected int'),
    ('mean', [0.5], r'meta\.mean: 1 values given, expected 3'),
    ('mean', [float('nan'), 0.4, 0.4], r'meta\.mean\[0\]: NaN'),
    ('mean', [123.7, 116.3, 103.5], r'meta\.mean: 123\.7 is out of range 0\.0\.\.1\.0'),   # 0..255 units
    ('std', [0, 0, 0], r'meta\.std: 0\.0 is out of range'),
    ('std', [float('inf')] * 3, r'meta\.std: inf is out of range'),
    ('classes', [], r'meta\.classes: expected distinct non-empty class names.*got \[\]'),
    ('classes', 'background,object', r"meta\.classes: expected a list, got str 'background,object'"),
    ('classes', [f'c{i}' for i in range(10)] + ['c0'], r'meta\.classes: expected distinct'),
    ('classes', [f'c{i}' for i in range(12)], r'meta\.classes: 12 name\(s\).* 11 output channels'),
    ('classes', ['a', 'b'], r'meta\.classes: 2 name\(s\).* 11 output channels'),
    # a downloaded model's names reach logs, /diagnostics and the model card: no terminal escapes, no fake lines
    ('classes', ['\x1b]0;owned\x07Sky'] + [f'c{i}' for i in range(10)],
     r"meta\.classes: class names hold control characters: '\\x1b\]0;owned\\x07Sky'$"),
    ('classes', [f'c{i}' for i in range(10)] + ['Sky\n[ERROR] [launch]: fake'],
     r'meta\.classes: class names hold control characters: .*Sky\\n\[ERROR\]'),
    ('palette', [[0, 0, 0]], r'meta\.palette: 1 colour\(s\) for 11 classes'),
    ('palette', [], r'meta\.palette: 0 colour\(s\) for 11 classes'),
    ('palette', [[0, 0, 0]] * 10 + [[300, -5, 0]], r'meta\.palette\[10\]: \[300, -5, 0\] is not \[r, g, b\]'),
    ('palette', [[0, 0, 0]] * 10 + [[300, -5, 'x']], r"meta\.palette\[10\]\[2\]: expected int, got str 'x'"),
    ('ignore_index', 'x', r"meta\.ignore_index: expected int, got str 'x'"),
    ('ignore_index', 300, r'meta\.ignore_index: 300 is out of range -1\.\.255'),
    ('provenance', None, r'meta\.provenance: null is not a value of this setting'),
    ('provenance', 'x', r'meta\.provenance: expected a mapping, got str'),
    ('arch_config', None, r'meta\.arch_config: null is not a value of this setting'),
    ('train_config', 'x', r'meta\.train_config: expected a mapping, got str'),
    ('metrics', [1, 2], r'meta\.metrics: expected a mapping, got list'),
    ('arch', 5, r'meta\.arch: expected str, got int 5'),
]


@pytest.mark.parametrize('key,value,message', BAD_META, ids=[f'{k}-{i}' for i, (k, _, _) in enumerate(BAD_META)])
def test_bad_meta_values_are_refused_by_every_reader(saved, tmp_path, key, value, message):
    from vidseg_ros.models.checkpoint import init_from_checkpoint
    path, model = saved
    raw = torch.load(path, weights_only=True)
    raw['meta'][key] = value
    bad = tmp_path / 'bad.pt'
    torch.save(raw, bad)
    for reader in (read_checkpoint, load_checkpoint, lambda p: init_from_checkpoint(model, p)):
        with pytest.raises(CheckpointError, match=message) as e:
            reader(bad)
        assert str(e.value).startswith(f'{bad}: ')
    # nothing writes such a checkpoint (save_checkpoint reads arch/arch_config None as not given)
    with pytest.raises(CheckpointError, match=f'{message}|meta lacks {key}'):
        save_checkpoint(tmp_path / 'new.pt', model, raw['meta'])
    assert not (tmp_path / 'new.pt').exists()


def test_meta_that_is_not_a_mapping(saved, tmp_path):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta'] = [1]
    torch.save(raw, tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match='meta is a list, expected a mapping'):
        read_checkpoint(tmp_path / 'list.pt')


def test_bad_values_are_clipped_in_the_message(saved, tmp_path):
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta']['classes'] = 'x' * 100_000
    torch.save(raw, tmp_path / 'long.pt')
    with pytest.raises(CheckpointError, match=r'meta\.classes: expected a list') as e:
        read_checkpoint(tmp_path / 'long.pt')
    assert len(str(e.value)) < 400


def test_valid_variants_still_load(saved, tmp_path):
    """Free input size (``[]``), no ignore index, integer mean/std, extra keys (halved weights) are fine."""
    path, _ = saved
    raw = torch.load(path, weights_only=True)
    raw['meta'].update(input_hw=[], ignore_index=None, mean=[0, 0, 0], std=[1, 1, 1], weights_dtype='float16')
    torch.save(raw, tmp_path / 'ok.pt')
    _, meta = load_checkpoint(tmp_path / 'ok.pt')
    assert meta['input_hw'] == [] and meta['ignore_index'] is None and meta['weights_dtype'] == 'float16'
    assert meta['mean'] == [0.0, 0.0, 0.0] and all(isinstance(v, float) for v in meta['std'])


def test_class_count_is_checked_against_the_built_model(saved):
    from vidseg_ros.models.checkpoint import check_meta
    path, _ = saved
    meta = read_checkpoint(path)['meta']
    assert check_meta(meta, 'm.pt', num_classes=11)['classes'] == meta['classes']
    with pytest.raises(CheckpointError, match=r'm\.pt: meta\.classes: 11 name\(s\).* 2 output channels '
                                              r'\(its classifier\)'):
        check_meta(meta, 'm.pt', num_classes=2)


def test_shipped_models_pass_the_checks():
    from pathlib import Path
    shipped = sorted((Path(__file__).resolve().parents[2] / 'models').glob('*.pt'))
    assert shipped
    for path in shipped:
        model, meta = load_checkpoint(path)
        assert len(meta['classes']) == model.num_classes == len(meta['palette'])


def test_a_checkpoint_save_on_a_full_disk_names_the_file_and_leaves_no_temp(saved, tmp_path):
    """torch.save onto a full disk raised a C++ RuntimeError ('[enforce fail at inline_container.cc] unexpected
    pos', exit 1 'internal error') and left m.pt.tmp beside the file: now an OSError naming m.pt, nothing left."""
    import errno

    from support.disk import file_size_limit
    path, model = saved
    before = path.read_bytes()
    with file_size_limit(64 * 1024), pytest.raises(OSError) as e:
        save_checkpoint(path, model, read_checkpoint(path)['meta'])
    assert (e.value.errno, e.value.filename) == (errno.EFBIG, str(path))
    assert 'not written; a file there before is unchanged' in e.value.strerror
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['m.pt']


def test_an_interrupted_save_leaves_no_temp(saved, tmp_path, monkeypatch):
    """Ctrl-C just before the rename left m.pt.tmp beside the file: the file keeps what it held, the temp goes."""
    import os
    path, model = saved
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, 'replace', interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, read_checkpoint(path)['meta'])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['m.pt']


def test_a_checkpoint_of_the_longest_legal_name_is_saved(saved, tmp_path):
    """'<name>.tmp' overran the file system's 255 bytes for names above 251 ('File name too long' after
    training); the temp name is short, so any legal name saves."""
    import os
    path, model = saved
    longest = tmp_path / ('a' * (os.pathconf(tmp_path, 'PC_NAME_MAX') - 3) + '.pt')
    save_checkpoint(longest, model, read_checkpoint(path)['meta'])
    load_checkpoint(longest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['m.pt', longest.name])


def _with_one_value(path, out, key, value):
    """A copy of the checkpoint at ``path`` whose tensor ``key`` holds ``value`` in one element."""
    data = torch.load(path, weights_only=True)
    data['state_dict'][key].view(-1)[0] = value
    torch.save(data, out)
    return out


@pytest.mark.parametrize('key', ['classifier.weight', 'encoder.stem.0.0.weight'])
@pytest.mark.parametrize('value', [float('nan'), float('inf'), float('-inf')])
def test_weights_with_nan_or_inf_are_refused_by_every_reader(saved, tmp_path, key, value):
    """A NaN in one weight loaded, exported and served masks of class 0 everywhere (confidence NaN), exit 0;
    eval even scored it perfectly stable. Every reader now refuses it, naming the file and the tensor."""
    from vidseg_ros.models.checkpoint import init_from_checkpoint
    from vidseg_ros.tools.export import export_torchscript
    path, model = saved
    bad = _with_one_value(path, tmp_path / 'diverged.pt', key, value)
    says = rf'diverged\.pt: 1 weight tensor\(s\) hold NaN or inf, first: {key}; .*diverged training \(lower the learning rate'
    for read in (read_checkpoint, load_checkpoint, lambda p: init_from_checkpoint(model, p),
                 lambda p: export_torchscript(p, tmp_path / 'x.ts')):
        with pytest.raises(CheckpointError, match=says):
            read(bad)
    assert not (tmp_path / 'x.ts').exists()


def test_weights_with_nan_are_never_saved(saved, tmp_path):
    """Training that diverged wrote NaN weights as best.pt and output: save_checkpoint refuses them, and a file
    already there keeps what it held."""
    path, model = saved
    before = path.read_bytes()
    meta = read_checkpoint(path)['meta']
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float('nan')
    for out in (path, tmp_path / 'new.pt'):
        with pytest.raises(CheckpointError, match=r'(m|new)\.pt \(not written\): 1 weight tensor\(s\) hold NaN or inf'):
            save_checkpoint(out, model, meta)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['m.pt']


def test_halving_weights_beyond_float16_s_range_is_refused(saved, tmp_path):
    """A weight above 65504 became inf in the float16 copy, which every reader then refused as a diverged training."""
    from vidseg_ros.training.checkpoint_meta import halve_checkpoint
    path, _ = saved
    big = _with_one_value(path, tmp_path / 'big.pt', 'classifier.weight', 1e5)
    with pytest.raises(CheckpointError, match=r"big\.pt: 1 weight tensor\(s\) exceed float16's range \(65504\), first: "
                                              r'classifier.weight; .*half\.pt not written: keep the weights float32'):
        halve_checkpoint(big, tmp_path / 'half.pt')
    assert not (tmp_path / 'half.pt').exists()
    halve_checkpoint(path, tmp_path / 'half.pt')
    load_checkpoint(tmp_path / 'half.pt')


def test_a_plain_pickle_is_refused_without_torch_s_warning(tmp_path):
    """A pickle written with pickle.dump (no zip archive): torch warned 'Detected pickle protocol 4 in the checkpoint'
    in two lines before our one line."""
    import pickle
    import warnings
    p = tmp_path / 'plain.pt'
    with open(p, 'wb') as f:
        pickle.dump({'a': 1}, f, protocol=4)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter('always')
        with pytest.raises(CheckpointError, match='is not a loadable torch checkpoint'):
            load_checkpoint(p)
    assert [str(w.message) for w in shown] == []
