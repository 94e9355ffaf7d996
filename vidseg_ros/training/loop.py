"""The training loop: one function for every model family, resumable, seeded, DDP under torchrun.

Per epoch it writes ``<runs_dir>/<name>/last.pt`` (weights, optimiser, epoch, step, RNG states,
history: enough for an exact ``resume``) and, when validation improves, ``best.pt`` in the shipped
checkpoint format; ``cfg.output`` gets a copy of ``best.pt`` once the run completes (an interrupted run
leaves it as it was). The learning rate is a pure function of the
step, and the augmentation of sample ``i`` in epoch ``e`` depends only on (seed, e, i), so a resumed
run continues exactly where the interrupted one stopped (at an epoch boundary).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from vidseg_ros.config import ConfigError
from vidseg_ros.data.datasets.lock import LockHeld, first_missing, lock_file
from vidseg_ros.engine.backends import resolve_device
from vidseg_ros.files import read_regular_text

from . import data_setup
from .class_presence import check_classes_present, class_pixels, summed_over_ranks
from .config import TrainConfig, config_dict, validate
from .ema import EMA
from .metrics import ConfusionMatrix
from .steps import Batch, StepRunner, frame_logits, normalize

log = logging.getLogger(__name__)
Callback = Callable[[dict], None]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at optimiser step ``step`` of ``total`` (warm-up, then the policy)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    end = cfg.lr * cfg.lr_final_ratio
    if cfg.lr_policy == 'cosine':
        return end + 0.5 * (cfg.lr - end) * (1 + math.cos(math.pi * t))
    if cfg.lr_policy == 'exp':
        return cfg.lr * cfg.lr_final_ratio ** t
    return cfg.lr


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, dict | None]:
    """``create_model(cfg.arch, num_classes=..., **cfg.arch_config)``, optionally warm-started.

    With ``init_from`` every tensor whose name and shape match is transferred, the rest (the
    classifier when the class count differs) keeps its fresh initialisation; the transfer report
    (counts, the source's classes and licence) is returned for the checkpoint's provenance.
    """
    from vidseg_ros.models import create_model
    model = create_model(cfg.arch, num_classes=cfg.num_classes, **cfg.arch_config)
    if not cfg.init_from:
        return model, None
    from vidseg_ros.engine.stream import resolve_model
    from vidseg_ros.models.checkpoint import init_from_checkpoint
    init = init_from_checkpoint(model, resolve_model(cfg.init_from))   # a path or a shipped model's name
    log.info('initialised from %s: %d tensors kept, %d re-initialised%s, %d unused', init['from'],
             init['kept'], init['reinitialised'],
             f' ({", ".join(init["reinitialised_names"][:4])})' if init['reinitialised'] else '', init['unused'])
    return model, init


def freeze(model: torch.nn.Module, prefixes: list[str]) -> list[torch.nn.Module]:
    """Fix every parameter under the dotted name ``prefixes``; returns the modules to keep in eval mode.

    Raises:
        ConfigError: a prefix names nothing in the model (the message lists its top-level parts), or
            nothing would be left to train.
    """
    if not prefixes:
        return []
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for prefix in prefixes:
        if prefix not in modules and prefix not in params:
            parts = ', '.join(name for name, _ in model.named_children())
            raise ConfigError(f'freeze: {prefix!r} names no part of {getattr(model, "arch", "the model")}; '
                              f'its parts: {parts}')
    under = lambda name: any(name == f or name.startswith(f + '.') for f in prefixes)  # noqa: E731
    for name, p in params.items():
        if under(name):
            p.requires_grad_(False)
    if not any(p.requires_grad for p in params.values()):
        raise ConfigError(f'freeze: {prefixes} fixes every parameter; nothing would be trained')
    return [m for name, m in modules.items() if name and under(name)]


def _ddp() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)),
            int(os.environ.get('LOCAL_RANK', 0)))


def train(cfg: TrainConfig, resume: bool = False, callback: Callback | None = None,
          model: torch.nn.Module | None = None, train_set=None, val_set=None, select_set=None,
          overwrite: bool = False) -> dict:
    """Train ``cfg``; returns ``{'best_mIoU', 'epochs', 'history', 'run_dir', 'best_path'}`` (+ ``'val'``);
    ``best_mIoU`` is None when no epoch was scored (no validation, or an undefined score).

    With a selection set (``cfg.select_split``) the best epoch is chosen on it and val is scored
    once at the end, on the best checkpoint (``'val'``); without one, on val as before.

    Args:
        cfg: the run's settings (validated again here).
        resume: continue from ``<runs_dir>/<name>/last.pt`` when it exists (refused when only best.pt does).
        overwrite: replace an earlier run of the same name and an ``output`` this run did not write
            (refused otherwise, before training).
        callback: called with a dict after every step (``kind='step'``) and epoch (``'epoch'``).
        model, train_set, val_set, select_set: injected objects (tests); built from ``cfg`` when None.
    """
    validate(cfg)
    info = data_setup.dataset_info(cfg)   # read once: class resolution and every checkpoint's meta use it
    cfg = data_setup.resolve_classes(cfg, info)
    rank, world, local_rank = _ddp()
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    done = False
    try:
        out = _train(cfg, info, resume, overwrite, callback, model, train_set, val_set, select_set, rank, world,
                     local_rank)
        done = True
        return out
    finally:
        if own_group:
            # The group goes before the interpreter exits, after every rank is done with it: left to exit-time
            # destructors, gloo aborted a rank now and then ("terminate called without an active exception").
            if done:
                dist.barrier()
            dist.destroy_process_group()


def _train(cfg: TrainConfig, info: dict, resume: bool, overwrite: bool, callback: Callback | None, model, train_set,
           val_set, select_set, rank: int, world: int, local_rank: int) -> dict:
    run_dir = Path(cfg.runs_dir) / cfg.name
    check_output_path(cfg)
    with held_run_dir(run_dir, rank):
        grant = output_grant(cfg, run_dir, resume, overwrite)
        check_nothing_replaced(cfg, run_dir, resume, overwrite, grant is not None)
        return _train_in(cfg, info, resume, callback, model, train_set, val_set, select_set, rank, world,
                         local_rank, run_dir, grant)


def _train_in(cfg: TrainConfig, info: dict, resume: bool, callback: Callback | None, model, train_set, val_set,
              select_set, rank: int, world: int, local_rank: int, run_dir: Path, grant: str | None = None) -> dict:
    device = resolve_device(cfg.device)
    if device.type == 'cuda' and world > 1:
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    if cfg.num_threads and device.type == 'cpu':
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed + rank, cfg.deterministic)
    teacher = load_teacher(cfg, info, device) if cfg.teacher and cfg.mode == 'keyframe' else None
    init = None
    if model is None:
        model, init = build_model(cfg)
    model = model.to(device)
    train_set = train_set if train_set is not None else data_setup.train_dataset(cfg)
    per_epoch = steps_per_epoch(cfg, len(train_set), world)   # refuses a set that gives no step, before any write
    # Every rank validates its share of the set; the confusion matrices are summed across ranks.
    val_set = val_set if val_set is not None else data_setup.val_dataset(cfg)
    select_set = select_set if select_set is not None else data_setup.select_dataset(cfg)
    clip_set = data_setup.temporal_dataset(cfg)      # real unlabelled clips (temporal_weight > 0)
    frozen = freeze(model, cfg.freeze)
    opt_cls = torch.optim.AdamW if cfg.optimizer == 'adamw' else torch.optim.Adam
    optimizer = opt_cls([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                        weight_decay=cfg.weight_decay)
    state = {'epoch': 0, 'step': 0, 'best': None, 'history': []}     # best: None until an epoch is scored
    if resume and (run_dir / 'last.pt').is_file():
        state = load_training_state(run_dir / 'last.pt', model, optimizer, rank)
        log.info('resumed %s at epoch %d step %d', run_dir, state['epoch'], state['step'])
    runner = StepRunner(cfg, model, device, world, teacher)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    if ema and resume and (run_dir / 'last.pt').is_file():
        ema.load(run_dir / 'last.pt')
    scored = ema.module if ema else model       # the weights that are validated and saved
    total = per_epoch * cfg.epochs
    if cfg.lr == 0:
        log.warning('lr 0: the weights will not change; only BatchNorm statistics follow the training data')
    first_epoch = state['epoch']     # this process's first: what the labels hold is checked after it
    for epoch in range(state['epoch'], cfg.epochs):
        loader = _loader(cfg, train_set, epoch, world, rank)
        clips = _endless(lambda e=epoch: _loader(cfg, clip_set, e, world, rank)) if clip_set is not None else None
        model.train()
        for module in frozen:      # fixed layers keep their BatchNorm statistics (and dropout off)
            module.eval()
        t0, seen, losses, labelled = time.perf_counter(), 0, [], 0
        class_px = np.zeros(cfg.num_classes, np.int64)
        for i, raw in enumerate(loader):
            if i >= per_epoch:
                break
            lr = lr_at(cfg, state['step'], total)
            for g in optimizer.param_groups:
                g['lr'] = lr
            labelled += _labelled_pixels(raw, cfg.ignore_index)
            if epoch == first_epoch:
                class_px += class_pixels(raw, cfg.ignore_index, cfg.num_classes)
            clip_batch = Batch.from_dict(next(clips), device) if clips is not None else None
            parts = _step(runner, Batch.from_dict(raw, device), optimizer, clip_batch, cfg, run_dir, state)
            state['step'] += 1
            parts['loss'] = _mean_over_ranks(parts['loss'], device, world)
            if not math.isfinite(parts['loss']):      # the same on every rank: all stop at this step
                raise ConfigError(f'the loss became {parts["loss"]} at epoch {epoch + 1} step {state["step"]}: training '
                                  f'diverged; {_after_divergence(cfg, run_dir, state)}')
            if ema:
                ema.update(model, state['step'])
            seen += raw[next(iter(raw))].shape[0] if hasattr(raw[next(iter(raw))], 'shape') else 0
            losses.append(parts['loss'])
            if callback and rank == 0:
                callback({'kind': 'step', 'epoch': epoch, 'step': state['step'], 'lr': lr,
                          'samples_per_s': seen / max(1e-9, time.perf_counter() - t0), **parts})
        if per_epoch and not _on_any_rank(labelled > 0, device, world):
            raise ConfigError(f'epoch {epoch + 1}: not one pixel of the training labels is labelled (every pixel is '
                              f'ignore_index {cfg.ignore_index}): there is nothing to learn from, and the model would '
                              'be written as trained at loss 0; label frames (vidseg label-import, propagate) or check '
                              f'ignore_index; {_kept(run_dir, state)}')
        if epoch == first_epoch and per_epoch:
            check_classes_present(summed_over_ranks(class_px, device, world), train_set, info.get('names'),
                                  cfg.ignore_index)
        check_weights_finite([model] + ([ema.module] if ema else []), epoch, cfg, run_dir, state, device, world)
        record = {'epoch': epoch + 1, 'step': state['step'], 'loss': float(np.mean(losses)),
                  'seconds': time.perf_counter() - t0}
        if (val_set is not None or select_set is not None) and (
                (cfg.val_every and (epoch + 1) % cfg.val_every == 0) or epoch + 1 == cfg.epochs):
            if select_set is not None:     # choose on held-out training drives; val waits for the end
                record.update({f'select_{k}': v for k, v in
                               validate_frames(scored, select_set, cfg, device, rank, world).items()})
            else:
                record.update(validate_frames(scored, val_set, cfg, device, rank, world))
        state['epoch'] = epoch + 1
        state['history'].append(record)
        rng_by_rank = _gather_rng(world)   # collective: every rank takes part, rank 0 stores it
        if rank == 0:
            # Without validation every epoch is the newest best; with it, only better scores count. An
            # undefined score (no pixel of the split labelled with a class: NaN, which never compares better)
            # counts as no validation, or no checkpoint and no output would ever be written.
            score = record.get('select_mIoU', record.get('mIoU'))
            undefined = _undefined(record)
            if undefined and not any(_undefined(r) for r in state['history'][:-1]):
                log.warning('mIoU on the %s split is undefined (no pixel labelled with a class): every epoch is '
                            'kept as the newest best, as without validation',
                            'selection' if select_set is not None else 'validation')
            improved = undefined or (_better(score, state['best']) if score is not None
                                     else val_set is None and select_set is None)
            if improved:
                if score is not None and not undefined:
                    state['best'] = score
                save_model(run_dir / 'best.pt', scored, cfg, record, info, init)
            save_training_state(run_dir / 'last.pt', model, optimizer, state, cfg, rng_by_rank, ema, grant)
            (run_dir / GRANT_NAME).unlink(missing_ok=True)    # an older version's grant: last.pt holds it now
            log.info('epoch %d: %s', epoch + 1, {k: round(v, 4) if isinstance(v, float) else v
                                                 for k, v in record.items() if not k.endswith('per_class_iou')})
        if callback and rank == 0:
            callback({'kind': 'epoch', **record})
    out = {'best_mIoU': state['best'], 'epochs': state['epoch'], 'history': state['history'],
           'run_dir': str(run_dir), 'best_path': str(run_dir / 'best.pt')}
    if select_set is not None and val_set is not None:
        out['val'] = score_best_once(scored, val_set, cfg, info, device, rank, world, state, init)
    if rank == 0 and cfg.output:
        publish_output(cfg, run_dir)
    return out


def _step(runner, batch, optimizer, clip_batch, cfg: TrainConfig, run_dir: Path, state: dict) -> dict:
    """``runner.step``; BatchNorm's refusal of one value per channel (batch_size 1 and a 32x32 crop: the
    stride-32 map is 1x1) said as the settings that cause it, not as torch's tensor sizes."""
    try:
        return runner.step(batch, optimizer, clip_batch)
    except ValueError as e:
        if 'Expected more than 1 value per channel' not in str(e):
            raise
        crop = cfg.crop_hw or cfg.input_hw
        raise ConfigError(f'batch_size {cfg.batch_size} with a {crop[0]}x{crop[1]} training crop leaves one value '
                          'per channel in the deepest (stride 32) feature map, where BatchNorm cannot train; '
                          f'raise batch_size to 2 or crop_hw (input_hw) to [64, 64]; {_kept(run_dir, state)}') from e


def _labelled_pixels(raw: dict, ignore_index: int) -> int:
    """Pixels of a batch's human labels that are not ``ignore_index``."""
    return sum(int((raw[k] != ignore_index).sum()) for k in ('label', 'labels') if k in raw)


def _mean_over_ranks(value: float, device, world: int) -> float:
    """``value`` averaged over the ranks (every rank takes part): the loss of the global batch, logged as one
    process with that batch would log it, and NaN or inf on every rank when it is on one, so that all ranks stop
    together on a diverged loss. The check needs this one collective per step; it also buys the global loss."""
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / world


def _on_any_rank(flag: bool, device, world: int) -> bool:
    """Whether ``flag`` holds on any rank (every rank takes part), so all ranks stop together: one rank that
    stopped alone would leave the others waiting in their next collective."""
    if world == 1:
        return flag
    total = torch.tensor([float(flag)], device=device)
    dist.all_reduce(total)
    return bool(total.item())


def _after_divergence(cfg: TrainConfig, run_dir: Path, state: dict) -> str:
    """What to do after a diverged run, and what it left (its files hold the last finite epoch)."""
    return f'lower lr (this run: {cfg.lr:g}) and train again (--set lr=...); {_kept(run_dir, state)}'


def _kept(run_dir: Path, state: dict) -> str:
    """What a run that stops now leaves: the files of its last completed epoch, or nothing."""
    return (f'best.pt and last.pt of {run_dir} are as epoch {state["epoch"]} left them; output is not written'
            if state['epoch'] else 'nothing was written')


def check_weights_finite(models: list, epoch: int, cfg: TrainConfig, run_dir: Path, state: dict, device,
                         world: int) -> None:
    """ConfigError, before anything of the epoch is saved, when a weight or buffer went NaN or inf while the loss
    stayed finite (e.g. BatchNorm's running_var at lr 1e6); otherwise ``save_checkpoint`` would refuse best.pt
    mid-run and last.pt would keep the broken weights."""
    from vidseg_ros.models.model_file_checks import nonfinite_keys
    bad = next((keys for keys in (nonfinite_keys(_unwrap(m).state_dict()) for m in models) if keys), [])
    if _on_any_rank(bool(bad), device, world):
        what = f'{len(bad)} weight tensor(s) hold NaN or inf (first: {", ".join(bad[:3])})' if bad else \
            'the weights of another rank hold NaN or inf'
        raise ConfigError(f'after epoch {epoch + 1} (step {state["step"]}) {what}: training diverged; '
                          f'{_after_divergence(cfg, run_dir, state)}')


def publish_output(cfg: TrainConfig, run_dir: Path) -> None:
    """``cfg.output`` = a copy of the finished run's ``best.pt``, written whole or not at all. Only a completed run
    writes it: an output saved at each new best epoch made a run interrupted at epoch 1 of 20 replace a shipped
    model (``--overwrite``) with a 1-epoch one whose meta said 20 epochs; the run folder keeps what resumes."""
    from vidseg_ros.models.checkpoint import write_file_atomic
    best = run_dir / 'best.pt'
    if not best.is_file():      # e.g. deleted from the run folder before a --resume of a finished run
        log.warning('output: %s not written: %s holds no best.pt', cfg.output, run_dir)
        return
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out, best.read_bytes())
    log.info('wrote %s (best.pt of %s)', out, run_dir)


# ---- what a run may write: its own folder (locked while it trains) and an output it wrote itself ----
LOCK_NAME = 'train.lock'
RUN_FILES = ('last.pt', 'best.pt')


@contextlib.contextmanager
def held_run_dir(run_dir: Path, rank: int = 0):
    """``run_dir``, created when missing and locked (rank 0) for as long as the run trains; a second training
    into it is refused. A run that fails before writing anything removes the folders it created."""
    created = first_missing(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(run_dir) if rank == 0 else None
    try:
        yield run_dir
    except BaseException:
        if created is not None and rank == 0 and {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(created, ignore_errors=True)     # a refused run leaves no empty folder behind
        raise
    finally:
        if lock is not None:
            lock.close()                 # closing releases the lock


def _lock_run_dir(run_dir: Path):
    """An exclusive lock on ``run_dir/train.lock`` holding this process's id; ConfigError naming the holder
    when another training has it (their saves would replace each other's files mid-write)."""
    try:
        return lock_file(run_dir / LOCK_NAME)
    except LockHeld as e:
        raise ConfigError(f'{run_dir}: run folder in use by another training (PID {e.pid}); wait for it to end, or '
                          'train under another name (--set name=...)') from None


def check_output_path(cfg: TrainConfig) -> None:
    """Refuse, before training, an ``output`` that cannot be written: a folder, under a file, or a name longer
    than its file system takes."""
    from vidseg_ros.models.checkpoint import check_name_length
    if not cfg.output:
        return
    out = Path(cfg.output)
    check_name_length(out, 'output')    # first: stat() of a name too long raises
    if out.is_dir():
        raise ConfigError(f'output: {out} is a folder; name the model file, e.g. {out / (cfg.name + ".pt")}')
    parent = next(p for p in out.parents if p.exists())
    if not parent.is_dir():
        raise ConfigError(f'output: {out} lies under {parent}, which is a file, not a folder')


# The output a run started with --overwrite may replace (its resolved path, or None): kept in its last.pt from
# the first saved epoch, since a run writes output only when it completes, so that a --resume of it (the CLI's
# or a library call's) replaces that output without --overwrite again. Versions before 2 Dec 2026 kept it in
# the run folder's GRANT_NAME (JSON {"output": path}), which is still read for a last.pt they wrote.
GRANT_KEY = 'overwrite_output'
GRANT_NAME = 'overwrite_output.json'


def output_grant(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """The resolved ``cfg.output`` when this run may replace it (``overwrite``, or a ``resume`` of a run started
    with it for that output), else None; saved in every last.pt of the run."""
    if not cfg.output:
        return None
    target = str(Path(cfg.output).resolve())
    if overwrite:
        return target
    if resume and (run_dir / 'last.pt').is_file() and saved_grant(run_dir) == target:
        log.info('resuming %s, started with --overwrite: it replaces %s when it completes', run_dir, cfg.output)
        return target
    return None


def saved_grant(run_dir: Path) -> str | None:
    """The output the run in ``run_dir`` was granted (``GRANT_KEY``), from its last.pt (mapped, not read whole)
    or, for a last.pt of an older version, its ``GRANT_NAME`` file; a damaged last.pt is a ConfigError naming it."""
    path = run_dir / 'last.pt'
    try:
        blob = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - torch raises many types for a damaged file: read_training_state names it
        read_training_state(path)
        return None
    if isinstance(blob, dict) and GRANT_KEY in blob:
        return blob[GRANT_KEY] if isinstance(blob[GRANT_KEY], str) else None
    try:    # RecursionError: '[[[...' 10**5 deep (an internal error); open_regular: a FIFO there blocked
        grant = json.loads(read_regular_text(run_dir / GRANT_NAME))
    except (OSError, ValueError, RecursionError):
        return None
    return grant.get('output') if isinstance(grant, dict) and isinstance(grant.get('output'), str) else None


def check_nothing_replaced(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool,
                           granted: bool = False) -> None:
    """Refuse, before training, to replace an earlier run of this name or an ``output`` this run did not
    write, unless ``overwrite`` (a resumed run replaces its own files) or, for the output, ``granted``
    (``output_grant``), and a ``resume`` of a run without its training state (it would start again from
    scratch)."""
    if overwrite:
        return
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume and held == ['best.pt']:   # killed while its first last.pt was written (best.pt is saved first)
        raise ConfigError(f'{run_dir} has best.pt but no last.pt: cannot resume; --overwrite to start again')
    if held and not resume:
        raise ConfigError(f'{run_dir} already holds a training run ({", ".join(held)}); --resume to continue it, or '
                          'another name (--set name=...), or --overwrite to replace it')
    out = Path(cfg.output) if cfg.output else None
    if not out or not out.exists() or granted:
        return
    mine = written_by_run(out, run_dir) if resume else False
    if mine:
        return
    fix = ('--overwrite to replace it (e.g. retraining a shipped model with config/train/camvid_*.yaml), or write '
           'another file (--set output=...)')
    # a run keeps its --overwrite in last.pt from the first saved epoch (GRANT_KEY); one stopped before it has none
    again = ('; a run writes output only when it completes, so one started with --overwrite and stopped before '
             'its first saved epoch resumes with --overwrite')
    if mine is None:
        raise ConfigError(f'output: {out} exists and cannot tell whether this run ({run_dir}) wrote it (a checkpoint '
                          f'from an older version has no run_dir, and its weights differ from the run\'s best.pt); '
                          f'{fix}{again}')
    raise ConfigError(f'output: {out} exists and was not written by this run ({run_dir}); {fix}'
                      f'{again if resume else ""}')


def written_by_run(path: Path, run_dir: Path) -> bool | None:
    """Whether the checkpoint at ``path`` was written by the run in ``run_dir``: its provenance says so; None when
    it cannot tell.

    Checkpoints made before 1 Dec 2026 have no ``provenance.run_dir``: such an output counts as this run's when its
    weights equal the run's ``best.pt`` (the output is a copy of it), or ``--resume`` of a run of an older version
    was refused, saying the run had not written what it had; None (cannot tell) when they differ but its
    ``train_config`` is a run of this name.
    """
    from vidseg_ros.models.checkpoint import CheckpointError, read_checkpoint

    from .checkpoint_meta import run_folder
    try:
        data = read_checkpoint(path)
    except CheckpointError:
        return False
    meta = data['meta']
    recorded = meta['provenance'].get('run_dir')
    if recorded is not None:
        return recorded == run_folder(run_dir)
    try:
        if _same_weights(data['state_dict'], read_checkpoint(run_dir / 'best.pt')['state_dict']):
            return True         # a copy of this run's best.pt: replacing it loses nothing
    except CheckpointError:
        pass
    # A training of this name by an older version may have written it; any other model (a user's, a shipped one
    # of another name) was not.
    return None if meta['train_config'].get('name') == run_dir.name else False


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def load_teacher(cfg: TrainConfig, info: dict, device) -> torch.nn.Module:
    """The keyframe teacher in eval mode; ConfigError when it predicts another class set than the run
    trains (its masks would be labels of other classes). Names compare as ``same_class_names`` says
    (the rule ``vidseg propagate --method teacher`` uses)."""
    from vidseg_ros.data.datasets.labels import same_class_names
    from vidseg_ros.models.checkpoint import CheckpointError, load_checkpoint

    from .checkpoint_meta import class_info
    try:
        teacher, meta = load_checkpoint(cfg.teacher)
    except CheckpointError as e:
        raise ConfigError(f'teacher: {e}') from None
    theirs, ours = list(meta['classes']), class_info(cfg, info)[0]
    named = bool(info['names'])     # without names in the data only the count can be compared
    if len(theirs) != len(ours) or (named and not same_class_names(theirs, ours)):
        raise ConfigError(f'teacher: {cfg.teacher} predicts {len(theirs)} classes ({", ".join(theirs)[:200]}), this '
                          f'run trains {len(ours)} ({", ".join(ours)[:200]}); use a teacher trained on this class '
                          'set, or none')
    return teacher.to(device).eval()


def _better(score: float, best: float | None) -> bool:
    return best is None or score > best


def _undefined(record: dict) -> bool:
    score = record.get('select_mIoU', record.get('mIoU'))
    return score is not None and math.isnan(score)


def _endless(make_loader):
    """Batches of a loader made again whenever it runs out (the real clips may be fewer than the steps)."""
    while True:
        empty = True
        for batch in make_loader():
            empty = False
            yield batch
        if empty:
            raise ConfigError('temporal_data has fewer clips than one batch (batch_size per process)')


def steps_per_epoch(cfg: TrainConfig, n: int, world: int = 1) -> int:
    """Optimiser steps per epoch on ``n`` training samples: the whole global batches (the sampler drops
    the rest), at most ``cfg.steps_per_epoch``.

    Raises:
        ConfigError: fewer samples than one global batch: the run would take no step at all.
    """
    batch = cfg.batch_size * world
    if n < batch:
        procs = f' per process x {world} processes' if world > 1 else ''
        lower = f'lower batch_size to {n // world} or ' if n >= world else ''
        raise ConfigError(f'{n} training samples (train_split {cfg.train_split!r} of {cfg.data_root}) are fewer '
                          f'than one batch (batch_size {cfg.batch_size}{procs}): no step would be taken; '
                          f'{lower}label more frames')
    full = n // batch
    return min(full, cfg.steps_per_epoch) if cfg.steps_per_epoch else full


class GlobalBatchSampler(Sampler[int]):
    """One seeded permutation per epoch, cut into global batches of ``batch_size * world``; rank ``r``
    yields the ``r``-th share of every global batch.

    So ``world`` processes under DDP (gradients averaged) see, step for step, exactly the samples one
    process with the global batch sees, and a run's data order does not depend on how many
    processes share it. With ``world == 1`` the order is ``RandomSampler``'s for the same generator.
    """

    def __init__(self, n: int, batch_size: int, world: int = 1, rank: int = 0, seed: int = 0):
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        b, g = self.batch_size, self.batch_size * self.world
        for start in range(0, self.n - g + 1, g):
            yield from perm[start + self.rank * b:start + (self.rank + 1) * b]

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world) * self.batch_size


def _loader(cfg: TrainConfig, ds, epoch: int, world: int, rank: int) -> DataLoader:
    # Order and augmentation depend on (seed, epoch) only: that is what makes resume exact.
    if hasattr(ds, 'seed'):
        ds.seed = cfg.seed * 100_003 + epoch
    sampler = GlobalBatchSampler(len(ds), cfg.batch_size, world, rank, cfg.seed * 7919 + epoch)
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      drop_last=True, persistent_workers=False)


def _shard(ds, rank: int, world: int):
    """Contiguous share of a dataset for ``rank`` (contiguous so streamed clips stay in order)."""
    if world == 1:
        return ds
    n = len(ds)
    return Subset(ds, range(n * rank // world, n * (rank + 1) // world))


def _gather_rng(world: int) -> list | None:
    """Every rank's torch RNG state (rank order), so a resumed DDP run continues each rank exactly."""
    if world == 1:
        return None
    states = [None] * world
    dist.all_gather_object(states, torch.get_rng_state())
    return states


@torch.no_grad()
def validate_frames(model, val_set, cfg: TrainConfig, device, rank: int = 0, world: int = 1) -> dict:
    """Per-frame mIoU / mAcc / pixel accuracy on the validation set at training resolution.

    Under DDP each rank scores its contiguous share and the confusion matrices are summed, so every
    rank returns the scores of the whole set.
    """
    model.eval()
    cm = ConfusionMatrix(cfg.num_classes, cfg.ignore_index)
    names = getattr(val_set, 'class_names', None)
    val_set = _shard(val_set, rank, world)
    # Recurrent models are validated as deployed: frames in temporal order, state carried along.
    stream = cfg.mode == 'sequence' and hasattr(_unwrap(model), 'step')
    loader = DataLoader(val_set, batch_size=1 if stream else 4, shuffle=False,
                        num_workers=cfg.num_workers)
    state = None
    for raw in loader:
        x = normalize(raw['image'].to(device))
        if stream:
            logits, state = _unwrap(model).step(x, state)
        else:
            logits = frame_logits(model, x)
        logits = torch.nn.functional.interpolate(logits.float(), size=raw['label'].shape[-2:],
                                                 mode='bilinear', align_corners=False)
        cm.update(logits.argmax(1).cpu().numpy(), raw['label'].numpy())
    if world > 1:   # on the model's device: NCCL (GPU runs) reduces device tensors only
        total = torch.from_numpy(cm.mat).to(device)
        dist.all_reduce(total)
        cm.mat = total.cpu().numpy()
    s = cm.scores(names)
    model.train()
    return {'mIoU': s['mIoU'], 'mAcc': s['mAcc'], 'pixel_acc': s['pixel_acc'],
            'per_class_iou': s['per_class_iou']}


def _unwrap(model):
    return model.module if hasattr(model, 'module') else model


def save_training_state(path: Path, model, optimizer, state: dict, cfg: TrainConfig,
                        rng_by_rank: list | None = None, ema=None, grant: str | None = None) -> None:
    """Everything needed to resume exactly (under DDP: every rank's RNG; the EMA weights) and the output the run
    may replace (``grant``: ``output_grant``); written atomically."""
    blob = {'model': _unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(),
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


TRAINING_STATE_KEYS = ('model', 'optimizer', 'epoch', 'step', 'best', 'history', 'torch_rng', 'python_rng',
                       'numpy_rng', 'numpy_pos')


def read_training_state(path: Path) -> dict:
    """``last.pt`` as ``save_training_state`` wrote it; ConfigError naming ``path`` when it is damaged or not a
    training state (e.g. a model checkpoint copied there)."""
    from vidseg_ros.models.checkpoint import CheckpointError, load_torch_file
    fix = ('resume from an intact last.pt, or start a new run (another name, --set name=..., or --overwrite to '
           'replace this one)')
    try:
        blob = load_torch_file(path)
    except CheckpointError as e:
        reason = str(e).removeprefix(str(path)).strip()
        raise ConfigError(f'--resume: {path} is truncated or not a training state (last.pt): {reason}; {fix}') from None
    missing = [k for k in TRAINING_STATE_KEYS if not isinstance(blob, dict) or k not in blob]
    if missing:
        what = 'a model checkpoint' if isinstance(blob, dict) and 'state_dict' in blob else 'no training state'
        raise ConfigError(f'--resume: {path} is truncated or not a training state (last.pt): it is {what}, without '
                          f'{", ".join(missing[:4])}; {fix}')
    return blob


def _other_model(saved: dict, model) -> str:
    """How the run that wrote a training state (its ``config``) differs from ``model``: the arch when it differs,
    else its class count and data."""
    arch = getattr(_unwrap(model), 'arch', None)
    if arch and saved.get('arch') and saved['arch'] != arch:
        return f'arch: {saved["arch"]}, here {arch}'
    return f'num_classes: {saved.get("num_classes")}, data_root: {saved.get("data_root")}'


def load_training_state(path: Path, model, optimizer, rank: int = 0) -> dict:
    """Restore weights, optimiser and RNG states (this rank's); returns the loop state (epoch, step, ...)."""
    from vidseg_ros.models.checkpoint import CheckpointError, check_state_dict
    blob = read_training_state(path)
    try:
        check_state_dict(_unwrap(model), blob['model'], 'its weights')
    except CheckpointError as e:   # e.g. the data now names another number of classes
        raise ConfigError(f'--resume: {path} is a run of another model ({_other_model(blob.get("config", {}), model)}); '
                          'resume with that config and data, or start a new run (another name or --set runs_dir=...). '
                          f'{e}') from None
    _unwrap(model).load_state_dict(blob['model'])
    try:
        optimizer.load_state_dict(blob['optimizer'])
    except ValueError:      # its parameter groups were built for another set of trained parameters
        saved = blob.get('config', {}).get('freeze', [])
        raise ConfigError(f'--resume: {path} trained another set of parameters (freeze: {saved}); resume with '
                          'that freeze, or start a new run (another name or --set runs_dir=...)') from None
    by_rank = blob.get('torch_rng_by_rank')
    torch.set_rng_state(by_rank[rank] if by_rank and rank < len(by_rank) else blob['torch_rng'])
    random.setstate((3, tuple(blob['python_rng']), None))
    np.random.set_state(('MT19937', blob['numpy_rng'].numpy().astype(np.uint32),
                        blob['numpy_pos'], 0, 0.0))
    if 'cuda_rng' in blob and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob['cuda_rng'])
    state = {k: blob[k] for k in ('epoch', 'step', 'best', 'history')}
    if state['best'] is not None and state['best'] < 0:     # older runs stored -1.0 for "none scored yet"
        state['best'] = None
    return state


def save_model(path: Path, model, cfg: TrainConfig, metrics: dict, info: dict, init: dict | None = None) -> None:
    """The shipped checkpoint format (models.checkpoint) with provenance and metrics in ``meta``; ``info`` is
    ``data_setup.dataset_info(cfg)``, read once per run."""
    from vidseg_ros.models.checkpoint import save_checkpoint

    from .checkpoint_meta import checkpoint_meta
    save_checkpoint(path, _unwrap(model), checkpoint_meta(_unwrap(model), cfg, metrics, info, init))


def score_best_once(model, val_set: Dataset, cfg: TrainConfig, info: dict, device, rank: int, world: int, state: dict,
                    init: dict | None = None) -> dict:
    """Val scores of the chosen checkpoint, computed once after training (every rank takes part) and
    stored beside the selection scores in ``best.pt`` (which ``cfg.output`` then copies); ``model`` ends with
    its weights."""

    from vidseg_ros.models.checkpoint import read_checkpoint

    run_dir = Path(cfg.runs_dir) / cfg.name
    if world > 1:
        dist.barrier()          # rank 0 has written best.pt
    _unwrap(model).load_state_dict(read_checkpoint(run_dir / 'best.pt', map_location=device)['state_dict'])
    val = validate_frames(model, val_set, cfg, device, rank, world)
    if rank == 0:
        best = next((r for r in state['history']
                     if state['best'] is not None and r.get('select_mIoU') == state['best']), {})
        metrics = {**best, **{f'val_{k}': v for k, v in val.items()}}
        save_model(run_dir / 'best.pt', model, cfg, metrics, info, init)
    return val
