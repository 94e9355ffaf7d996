"""The ``meta`` dict stored with every trained checkpoint: what the engine and model card need."""
from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
from pathlib import Path

import torch

from vidseg_ros.constants import WEIGHTS_INHERIT
from vidseg_ros.engine.devices import describe_device
from vidseg_ros.text import clip

from .config import TrainConfig, config_dict
from .selection import selection_note
from .steps import MEAN, STD


def default_palette(n: int) -> list[list[int]]:
    """Distinct display colours for classes without a colour table (class 0 black)."""
    return [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(n)]


def class_info(cfg: TrainConfig, info: dict, init: dict | None = None) -> tuple[list[str], list[list[int]]]:
    """Class names and palette: the data's (dataset.yaml, CamVid, DAVIS), else the initial checkpoint's
    when it has the same count, else numbered names. ``info`` is ``data_setup.dataset_info(cfg)``."""
    n = cfg.num_classes
    if info['names'] and len(info['names']) == n:
        colors = info['colors'] if info['colors'] and len(info['colors']) >= n else default_palette(n)
        return list(info['names']), [list(map(int, c)) for c in colors[:n]]
    if init and len(init['classes']) == n:
        return list(init['classes']), [list(map(int, c)) for c in init['palette'][:n]]
    return [str(i) for i in range(n)], default_palette(n)


def licence_text(cfg: TrainConfig, info: dict, init: dict | None = None) -> str:
    """Licence of trained weights from what was used: the data's licence and the initial weights'."""
    data = info['licence'] or (f'licence not recorded (add `licence: ...` to {cfg.data_root}/dataset.yaml)'
                               if cfg.dataset == 'folder' else 'licence not recorded')
    parts = [f'Training data {cfg.data_root}: {data.rstrip(".")}.']
    for src in info.get('also', []):   # a licence text ends with its own full stop; one is enough
        parts.append(f'{src["role"][0].upper()}{src["role"][1:]} {src["path"]}: '
                     f'{(src["licence"] or "licence not recorded").rstrip(".")}.')
    if init:
        parts.append(f'Initial weights {cfg.init_from}: {(init["licence"] or "licence not recorded").rstrip(".")}.')
    return ' '.join(parts + [WEIGHTS_INHERIT])


def run_folder(run_dir: str | Path) -> str:
    """A run's folder as provenance records it (``run_dir``, absolute): how a resumed run recognises the
    output it wrote itself, which it may replace."""
    return str(Path(run_dir).resolve())


def _plain(v):
    """Metrics as plain python (floats, dicts, lists): safe for weights_only loading and YAML."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if hasattr(v, 'item'):
        return v.item()
    return v


def _command_line() -> str:
    """The command that trained, every argument (quoted as a shell takes it back), clipped to 2000 characters:
    its first 8 arguments alone dropped the --set overrides past them ('... --set output=x.pt --set')."""
    return clip(shlex.join(sys.argv), 2000)


def checkpoint_meta(model: torch.nn.Module, cfg: TrainConfig, metrics: dict, info: dict,
                    init: dict | None = None) -> dict:
    """Meta in the checkpoint format (models.checkpoint); ``info`` is ``data_setup.dataset_info(cfg)``, as
    the caller read it for the run; ``init`` is build_model's transfer report."""
    from vidseg_ros.models.checkpoint import default_meta
    names, palette = class_info(cfg, info, init)
    arch_config = dict(getattr(model, 'arch_config', None) or cfg.arch_config, num_classes=cfg.num_classes)
    also = info.get('also', [])
    provenance = {
        'data': '; '.join([f'{cfg.dataset}:{cfg.train_split} ({cfg.data_root}, read in place)']
                          + [f'{src["role"]}: {src["path"]}' for src in also]),
        'data_roots': [str(Path(cfg.data_root).resolve())] + [str(Path(src['root']).resolve())
                                                               for src in also if src['root']],
        'trained': True,
        'training': f'vidseg train, {cfg.epochs} epochs, mode {cfg.mode}, '
                    f'input {cfg.input_hw[0]}x{cfg.input_hw[1]}',
        'date': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
        'command': _command_line(),
        'host': f'{platform.machine()} torch {torch.__version__}',
        'hardware': describe_device(next(model.parameters()).device),
        'init_from': cfg.init_from, 'licence': licence_text(cfg, info, init),
        'selection': selection_note(cfg),
        'run_dir': run_folder(Path(cfg.runs_dir) / cfg.name),
    }
    if init:
        provenance['transfer'] = {k: init[k] for k in ('from', 'kept', 'reinitialised', 'reinitialised_names',
                                                       'unused')}
    return default_meta(cfg.arch, arch_config, classes=names, palette=palette, ignore_index=cfg.ignore_index,
                        input_hw=cfg.input_hw, mean=list(MEAN), std=list(STD), provenance=provenance,
                        metrics=_plain(metrics), train_config=config_dict(cfg))


def halve_checkpoint(path, out=None) -> dict:
    """Store a checkpoint's float32 weights as float16 (half the file; models compute in fp32).

    ``load_checkpoint`` casts them back when it loads the state into the freshly built model.
    Returns ``{'bytes_before', 'bytes_after'}``.
    """
    from pathlib import Path

    from vidseg_ros.models.checkpoint import read_checkpoint, save_torch_file
    from vidseg_ros.models.model_file_checks import CheckpointError, nonfinite_keys
    path = Path(path)
    out = Path(out or path)
    before = path.stat().st_size
    data = read_checkpoint(path)        # finite weights only
    data['state_dict'] = {k: v.half() if v.dtype == torch.float32 else v
                          for k, v in data['state_dict'].items()}
    beyond = nonfinite_keys(data['state_dict'])   # |w| > 65504 became inf: every reader would refuse the file
    if beyond:
        raise CheckpointError(f'{path}: {len(beyond)} weight tensor(s) exceed float16\'s range (65504), first: '
                              f'{", ".join(beyond[:3])}; {out} not written: keep the weights float32')
    data['meta'] = dict(data['meta'], weights_dtype='float16')
    save_torch_file(data, out)
    return {'bytes_before': before, 'bytes_after': out.stat().st_size}
