"""What a run saves every epoch: ``last.pt`` (the training state, enough for an exact ``resume``, read back here)
and ``best.pt`` in the shipped checkpoint format."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from vidseg_ros.config import ConfigError

from .config import TrainConfig, config_dict
from .model_setup import is_frozen, unwrap

# The key of last.pt that holds the output the run may replace (run_outputs.output_grant says which).
GRANT_KEY = 'overwrite_output'


def gather_rng(world: int) -> list | None:
    """Every rank's torch RNG state (rank order), so a resumed DDP run continues each rank exactly."""
    if world == 1:
        return None
    states = [None] * world
    dist.all_gather_object(states, torch.get_rng_state())
    return states


def save_training_state(path: Path, model, optimizer, state: dict, cfg: TrainConfig,
                        rng_by_rank: list | None = None, ema=None, grant: str | None = None) -> None:
    """Everything needed to resume exactly (under DDP: every rank's RNG; the EMA weights) and the output the run
    may replace (``grant``: ``output_grant``); written atomically."""
    blob = {'model': unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(),
            'epoch': state['epoch'], 'step': state['step'], 'best': state['best'],
            'history': state['history'], 'config': config_dict(cfg), GRANT_KEY: grant,
            'torch_rng': torch.get_rng_state(), 'python_rng': list(random.getstate()[1]),
            'numpy_rng': torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            'numpy_pos': int(np.random.get_state()[2])}
    if rng_by_rank:
        blob['torch_rng_by_rank'] = rng_by_rank
    if ema is not None:
        blob['ema'] = ema.module.state_dict()
    if torch.cuda.is_available():
        blob['cuda_rng'] = torch.cuda.get_rng_state_all()
    from vidseg_ros.models.checkpoint import save_torch_file
    save_torch_file(blob, path)


# What each key of last.pt holds (a file with another type there is damaged: it was a TypeError traceback).
TRAINING_STATE_TYPES = {'model': dict, 'optimizer': dict, 'epoch': int, 'step': int, 'best': (float, int, type(None)),
                        'history': list, 'torch_rng': torch.Tensor, 'python_rng': (list, tuple),
                        'numpy_rng': torch.Tensor, 'numpy_pos': int}
TRAINING_STATE_KEYS = tuple(TRAINING_STATE_TYPES)
FIX = ('resume from an intact last.pt, or start a new run (another name, --set name=..., or --overwrite to replace '
       'this one)')


def read_training_state(path: Path) -> dict:
    """``last.pt`` as ``save_training_state`` wrote it; ConfigError naming ``path`` when it is damaged (bytes that
    differ from their zip CRC-32, a key of another type) or not a training state (e.g. a model checkpoint copied
    there)."""
    from vidseg_ros.models.checkpoint import CheckpointError, load_torch_file
    from vidseg_ros.models.model_file_checks import crc_problem
    # torch.load checks no zip CRC: bytes flipped in a tensor's data resumed other weights without a word
    if problem := crc_problem(path):
        raise ConfigError(f'--resume: {problem}; {FIX}')
    try:
        blob = load_torch_file(path, verify=False)
    except CheckpointError as e:
        reason = str(e).removeprefix(str(path)).strip()
        raise ConfigError(f'--resume: {path} is truncated or not a training state (last.pt): {reason}; {FIX}') from None
    missing = [k for k in TRAINING_STATE_KEYS if not isinstance(blob, dict) or k not in blob]
    if missing:
        what = 'a model checkpoint' if isinstance(blob, dict) and 'state_dict' in blob else 'no training state'
        raise ConfigError(f'--resume: {path} is truncated or not a training state (last.pt): it is {what}, without '
                          f'{", ".join(missing[:4])}; {FIX}')
    if odd := [f'{k} is {type(blob[k]).__name__}' for k, t in TRAINING_STATE_TYPES.items()
               if not isinstance(blob[k], t) or isinstance(blob[k], bool)]:
        raise ConfigError(f'--resume: {path} is damaged: {", ".join(odd[:3])}; {FIX}')
    if 'ema' in blob and not isinstance(blob['ema'], dict):
        raise ConfigError(f'--resume: {path} is damaged: ema is {type(blob["ema"]).__name__}; {FIX}')
    return blob


def _other_model(saved: dict, model, cfg: TrainConfig | None) -> str | None:
    """How the run that wrote a training state (its ``config``) differs from this one: the arch when it differs,
    else its class count and data, else its arch_config; None when ``cfg`` names the same model."""
    arch = getattr(unwrap(model), 'arch', None)
    if arch and saved.get('arch') and saved['arch'] != arch:
        return f'arch: {saved["arch"]}, here {arch}'
    if cfg is None or not saved or saved.get('num_classes') != cfg.num_classes:
        return f'num_classes: {saved.get("num_classes")}, data_root: {saved.get("data_root")}'
    if saved.get('arch') != cfg.arch or saved.get('arch_config') != cfg.arch_config:
        return f'{saved.get("arch")} with arch_config {saved.get("arch_config")}, here {cfg.arch} with {cfg.arch_config}'
    return None


def _weights_refused(path: Path, saved: dict, model, cfg: TrainConfig | None, e: Exception) -> ConfigError:
    """Weights of last.pt that do not fit this run's model: another model's run, or, when its own config names
    this model, a damaged file (it was told 'a run of another model (num_classes: 3, ...)', this run's own)."""
    other = _other_model(saved, model, cfg)
    if other is None:
        return ConfigError(f'--resume: {path} is damaged: its weights do not fit the model its own config names '
                           f'({cfg.arch}, {cfg.num_classes} classes, arch_config {cfg.arch_config}), or another '
                           f'vidseg_ros version wrote it; {FIX}. {e}')
    # that config may no longer load (a first-release CamVid run of num_classes 12 is refused now): its weights can
    best = Path(path).parent / 'best.pt'
    start = f', from its weights with --set init_from={best}' if best.is_file() else ''
    return ConfigError(f'--resume: {path} is a run of another model ({other}); resume with that config and data, or '
                       f'start a new run (another name or --set runs_dir=...){start}. {e}')


def _freeze_refused(path: Path, saved: list) -> ConfigError:
    return ConfigError(f'--resume: {path} trained another set of parameters (freeze: {saved}); resume with '
                       'that freeze, or start a new run (another name or --set runs_dir=...)')


def load_training_state(path: Path, model, optimizer, rank: int = 0, cfg: TrainConfig | None = None,
                        ema=None) -> dict:
    """Restore weights, optimiser, RNG states (this rank's) and, given ``ema`` (``EMA``), the weights' average;
    returns the loop state (epoch, step, ...). ``cfg``: this run's settings (weights that do not fit a model of the
    same settings are a damaged file)."""
    from vidseg_ros.models.checkpoint import CheckpointError, check_state_dict
    blob = read_training_state(path)
    try:
        check_state_dict(unwrap(model), blob['model'], 'its weights')
    except CheckpointError as e:   # e.g. the data now names another number of classes
        raise _weights_refused(path, blob.get('config', {}), model, cfg, e) from None
    unwrap(model).load_state_dict(blob['model'])
    if ema is not None:
        _restore_ema(path, blob, ema)
    saved = blob.get('config', {}).get('freeze', [])
    # The optimiser's state is matched to parameters by position only: another freeze of as many parameters took
    # other layers' Adam moments (a shape error at the first step, or in silence where the shapes agree).
    trained = [n for n, p in unwrap(model).named_parameters() if p.requires_grad]
    if 'freeze' in blob.get('config', {}) and trained != [n for n, _ in unwrap(model).named_parameters()
                                                          if not is_frozen(n, saved)]:
        raise _freeze_refused(path, saved)
    try:
        optimizer.load_state_dict(blob['optimizer'])
    except ValueError:      # its parameter groups were built for another set of trained parameters
        raise _freeze_refused(path, saved) from None
    try:
        _restore_rng(blob, rank)
    except (TypeError, ValueError, IndexError, RuntimeError) as e:     # a state of another size or type
        raise ConfigError(f'--resume: {path} is damaged: its random number states do not restore ({e}); {FIX}') from None
    state = {k: blob[k] for k in ('epoch', 'step', 'best', 'history')}
    if state['best'] is not None and state['best'] < 0:     # older runs stored -1.0 for "none scored yet"
        state['best'] = None
    return state


def _restore_ema(path: Path, blob: dict, ema) -> None:
    """The average ``blob`` holds, into ``ema.module``; a run saved without one starts it at its weights. Weights
    that do not fit the model (which the file's own weights fit) are a damaged file: it was a RuntimeError
    traceback."""
    from vidseg_ros.models.checkpoint import CheckpointError, check_state_dict
    weights = blob.get('ema', blob['model'])
    try:
        check_state_dict(ema.module, weights, 'ema')
    except CheckpointError as e:
        raise ConfigError(f'--resume: {path} is damaged: its ema weights do not fit the model its weights fit ({e}); '
                          f'{FIX}') from None
    ema.module.load_state_dict(weights)


def _restore_rng(blob: dict, rank: int) -> None:
    """This rank's torch, Python, numpy (and CUDA) random states as ``save_training_state`` saved them."""
    by_rank = blob.get('torch_rng_by_rank')
    torch.set_rng_state(by_rank[rank] if by_rank and rank < len(by_rank) else blob['torch_rng'])
    random.setstate((3, tuple(blob['python_rng']), None))
    np.random.set_state(('MT19937', blob['numpy_rng'].numpy().astype(np.uint32),
                        blob['numpy_pos'], 0, 0.0))
    if 'cuda_rng' in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob['cuda_rng'])


def save_model(path: Path, model, cfg: TrainConfig, metrics: dict, info: dict, init: dict | None = None) -> None:
    """The shipped checkpoint format (models.checkpoint) with provenance and metrics in ``meta``; ``info`` is
    ``data_setup.dataset_info(cfg)``, read once per run."""
    from vidseg_ros.models.checkpoint import save_checkpoint

    from .checkpoint_meta import checkpoint_meta
    save_checkpoint(path, unwrap(model), checkpoint_meta(unwrap(model), cfg, metrics, info, init))
