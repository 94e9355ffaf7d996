"""Bytes changed inside a tensor's data of a checkpoint or training state: torch.load checks no zip CRC, so they
loaded as other weights; the CRC-32 the zip headers hold (torch.save writes it) now names the file damaged. A file
edited and saved again with torch.save has fresh CRCs and loads. And a damaged EMA average in last.pt is the same one
'is damaged' line as the other entries."""
import io
import zipfile
from pathlib import Path

import pytest
import torch

from support.tiny_models import TinyKeyframe, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import (CheckpointError, default_meta, load_checkpoint, read_checkpoint,
                                          save_checkpoint)
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.loop import train

HW = (64, 64)


def _cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW),
                                 batch_size=2, epochs=1, val_split='', hflip=False, runs_dir=str(tmp_path / 'runs')),
                          **kw})


def _train(cfg, **kw):
    return train(cfg, model=TinyKeyframe(), train_set=frames(4, HW), **kw)


def _flip_a_byte(path: Path, record: str) -> None:
    """Flip one byte in the middle of the stored (uncompressed) record of the zip archive ``path`` whose name ends
    with ``record``, as a bad disk block or a faulty copy would; the archive stays readable."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record))
    data = bytearray(path.read_bytes())
    # the local header: 30 bytes, then the name and the extra field, then the data
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], 'little')
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], 'little')
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _largest_tensor_record(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return max((i for i in z.infolist() if '/data/' in i.filename), key=lambda i: i.file_size).filename


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=3, cached_levels=0, fpn_ch=16)
    return save_checkpoint(path, model, default_meta('keyframe_fpn', model.arch_config, classes=['a', 'b', 'c']))


def test_a_byte_flipped_in_a_checkpoint_s_weights_is_refused_as_damaged_by_every_reader(tmp_path):
    """It loaded and served other weights without a word (torch.load checks no zip CRC)."""
    from vidseg_ros.models.checkpoint import init_from_checkpoint
    path = _checkpoint(tmp_path / 'm.pt')
    load_checkpoint(path)
    _flip_a_byte(path, _largest_tensor_record(path))
    says = (r'm.pt is damaged: 1 of its records differ from the CRC-32 saved with them \(first: \w+/data/\d+; '
            r'changed on the disk or in a copy\); re-copy it from an intact copy')
    model = create_model('keyframe_fpn', num_classes=3, cached_levels=0, fpn_ch=16)
    for read in (load_checkpoint, read_checkpoint, lambda p: init_from_checkpoint(model, p)):
        with pytest.raises(CheckpointError, match=says):
            read(path)


def test_a_checkpoint_edited_and_saved_again_with_torch_save_loads(tmp_path):
    """Its CRCs are torch.save's own: no false 'damaged' for a file changed on purpose (a first-release file as
    test_upgrade_artefacts builds it, a state_dict edited by hand)."""
    path = _checkpoint(tmp_path / 'm.pt')
    data = torch.load(path, weights_only=True)
    next(iter(data['state_dict'].values())).view(-1)[0] += 1
    torch.save(data, path)
    loaded, _ = load_checkpoint(path)
    assert torch.equal(next(iter(loaded.state_dict().values())), next(iter(data['state_dict'].values())))


def test_a_byte_flipped_in_last_pt_is_refused_as_damaged_on_resume(tmp_path):
    """It resumed from the changed weights without a word."""
    _train(_cfg(tmp_path))
    last = tmp_path / 'runs' / 't' / 'last.pt'
    _flip_a_byte(last, _largest_tensor_record(last))
    with pytest.raises(ConfigError, match=r'--resume: .*last.pt is damaged: 1 of its records differ from the CRC-32 '
                                          r'saved with them \(first: \w+/data/\d+; changed on the disk or in a '
                                          r'copy\); resume from an intact last.pt') as e:
        _train(_cfg(tmp_path, epochs=2), resume=True)
    assert '\n' not in str(e.value)


def _with_ema(path: Path, edit) -> None:
    """``path`` (last.pt) with ``edit`` applied to its EMA weights."""
    blob = torch.load(path, weights_only=True)
    blob['ema'] = dict(blob['ema'])
    edit(blob)
    buf = io.BytesIO()
    torch.save(blob, buf)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize('edit,says', [
    (lambda b: b['ema'].pop(next(iter(b['ema']))),
     r'is damaged: its ema weights do not fit the model its weights fit \(ema: .* 1 missing key'),
    (lambda b: b['ema'].update({k: v[:1] for k, v in b['ema'].items()}),
     r'is damaged: its ema weights do not fit .* shape mismatch'),
    (lambda b: b['ema'].update({next(iter(b['ema'])): 'x'}), r'is damaged: its ema weights do not fit .* no tensors'),
    (lambda b: b.update(ema=[1, 2]), r'is damaged: ema is list;'),
    (lambda b: b.update(ema=None), r'is damaged: ema is NoneType;')])
def test_a_damaged_ema_in_last_pt_is_one_damaged_line(tmp_path, edit, says):
    """It was a RuntimeError traceback from load_state_dict (a list: AttributeError)."""
    cfg = _cfg(tmp_path, ema_decay=0.9)
    _train(cfg)
    _with_ema(tmp_path / 'runs' / 't' / 'last.pt', edit)
    with pytest.raises(ConfigError, match=r'--resume: .*last.pt ' + says + r'.*resume from an intact last.pt') as e:
        _train(_cfg(tmp_path, ema_decay=0.9, epochs=2), resume=True)
    assert '\n' not in str(e.value)


def test_a_run_resumed_with_ema_from_one_without_starts_the_average_at_its_weights(tmp_path):
    _train(_cfg(tmp_path))
    last = torch.load(tmp_path / 'runs' / 't' / 'last.pt', weights_only=True)
    assert 'ema' not in last
    _train(_cfg(tmp_path, ema_decay=0.9, epochs=2, lr=0.0), resume=True)
    again = torch.load(tmp_path / 'runs' / 't' / 'last.pt', weights_only=True)
    # lr 0: the weights stay (BatchNorm-free model), so the average of equal weights is those weights
    assert all(torch.allclose(again['ema'][k], v) for k, v in last['model'].items())


def test_a_byte_flipped_in_a_torchscript_export_s_weights_is_refused_as_damaged(tmp_path):
    """A .ts export is a zip of torch's too: torch.jit.load checks no CRC either, and served other weights."""
    from vidseg_ros.engine.backends import open_exported
    from vidseg_ros.tools.export import export_torchscript
    ts = tmp_path / 'm.ts'
    export_torchscript(_checkpoint(tmp_path / 'm.pt'), ts, input_hw=[64, 64])
    open_exported(ts, device='cpu')
    _flip_a_byte(ts, _largest_tensor_record(ts))
    with pytest.raises(CheckpointError, match=r'm\.ts is damaged: 1 of its records differ from the CRC-32'):
        open_exported(ts, device='cpu')
