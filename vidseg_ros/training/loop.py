"""The training loop: one function for every model family, resumable, seeded, DDP under torchrun.

Per epoch it writes ``<runs_dir>/<name>/last.pt`` (weights, optimiser, epoch, step, RNG states,
history: enough for an exact ``resume``) and, when validation improves, ``best.pt`` in the shipped
checkpoint format; ``cfg.output`` gets a copy of ``best.pt`` once the run completes (an interrupted run
leaves it as it was). The learning rate is a pure function of the
step, and the augmentation of sample ``i`` in epoch ``e`` depends only on (seed, e, i), so a resumed
run continues exactly where the interrupted one stopped (at an epoch boundary).

Its parts: ``schedule`` (seeding, learning rate, each epoch's data order), ``model_setup`` (the model, frozen
parts, the teacher), ``checkpoints`` (last.pt and best.pt, resume), ``run_outputs`` (the run folder's lock, what
a run may replace, the output), ``validation`` (scores, the best epoch) and ``stop_checks`` (why a run stops
mid-way).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from vidseg_ros.config import ConfigError
from vidseg_ros.engine.devices import resolve_device

from . import data_setup
from .checkpoints import gather_rng, load_training_state, save_model, save_training_state
from .class_presence import check_classes_present, class_pixels, summed_over_ranks
from .config import TrainConfig, validate
from .ema import EMA
from .model_setup import build_model, freeze, load_teacher, unwrap
from .run_outputs import (GRANT_NAME, check_nothing_replaced, check_output_path, held_run_dir, output_grant,
                          publish_output)
from .schedule import endless, epoch_loader, lr_at, seed_everything, steps_per_epoch
from .stop_checks import (after_divergence, check_weights_finite, kept, labelled_pixels, mean_over_ranks,
                          on_any_rank, run_step)
from .steps import Batch, StepRunner
from .validation import is_better, undefined_score, validate_frames

log = logging.getLogger(__name__)
Callback = Callable[[dict], None]


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
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    if resume and (run_dir / 'last.pt').is_file():
        state = load_training_state(run_dir / 'last.pt', model, optimizer, rank, cfg, ema)
        log.info('resumed %s at epoch %d step %d', run_dir, state['epoch'], state['step'])
    runner = StepRunner(cfg, model, device, world, teacher)
    scored = ema.module if ema else model       # the weights that are validated and saved
    total = per_epoch * cfg.epochs
    if cfg.lr == 0:
        log.warning('lr 0: the weights will not change; only BatchNorm statistics follow the training data')
    first_epoch = state['epoch']     # this process's first: what the labels hold is checked after it
    for epoch in range(state['epoch'], cfg.epochs):
        loader = epoch_loader(cfg, train_set, epoch, world, rank)
        clips = (endless(lambda e=epoch: epoch_loader(cfg, clip_set, e, world, rank)) if clip_set is not None
                 else None)
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
            labelled += labelled_pixels(raw, cfg.ignore_index)
            if epoch == first_epoch:
                class_px += class_pixels(raw, cfg.ignore_index, cfg.num_classes)
            clip_batch = Batch.from_dict(next(clips), device) if clips is not None else None
            parts = run_step(runner, Batch.from_dict(raw, device), optimizer, clip_batch, cfg, run_dir, state)
            state['step'] += 1
            parts['loss'] = mean_over_ranks(parts['loss'], device, world)
            if not math.isfinite(parts['loss']):      # the same on every rank: all stop at this step
                raise ConfigError(f'the loss became {parts["loss"]} at epoch {epoch + 1} step {state["step"]}: training '
                                  f'diverged; {after_divergence(cfg, run_dir, state)}')
            if ema:
                ema.update(model, state['step'])
            seen += raw[next(iter(raw))].shape[0] if hasattr(raw[next(iter(raw))], 'shape') else 0
            losses.append(parts['loss'])
            if callback and rank == 0:
                callback({'kind': 'step', 'epoch': epoch, 'step': state['step'], 'lr': lr,
                          'samples_per_s': seen / max(1e-9, time.perf_counter() - t0), **parts})
        if per_epoch and not on_any_rank(labelled > 0, device, world):
            raise ConfigError(f'epoch {epoch + 1}: not one pixel of the training labels is labelled (every pixel is '
                              f'ignore_index {cfg.ignore_index}): there is nothing to learn from, and the model would '
                              'be written as trained at loss 0; label frames (vidseg label-import, propagate) or check '
                              f'ignore_index; {kept(run_dir, state)}')
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
        rng_by_rank = gather_rng(world)   # collective: every rank takes part, rank 0 stores it
        if rank == 0:
            # Without validation every epoch is the newest best; with it, only better scores count. An
            # undefined score (no pixel of the split labelled with a class: NaN, which never compares better)
            # counts as no validation, or no checkpoint and no output would ever be written.
            score = record.get('select_mIoU', record.get('mIoU'))
            undefined = undefined_score(record)
            if undefined and not any(undefined_score(r) for r in state['history'][:-1]):
                log.warning('mIoU on the %s split is undefined (no pixel labelled with a class): every epoch is '
                            'kept as the newest best, as without validation',
                            'selection' if select_set is not None else 'validation')
            improved = undefined or (is_better(score, state['best']) if score is not None
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


def score_best_once(model, val_set: Dataset, cfg: TrainConfig, info: dict, device, rank: int, world: int, state: dict,
                    init: dict | None = None) -> dict:
    """Val scores of the chosen checkpoint, computed once after training (every rank takes part) and
    stored beside the selection scores in ``best.pt`` (which ``cfg.output`` then copies); ``model`` ends with
    its weights."""

    from vidseg_ros.models.checkpoint import read_checkpoint

    run_dir = Path(cfg.runs_dir) / cfg.name
    if world > 1:
        dist.barrier()          # rank 0 has written best.pt
    unwrap(model).load_state_dict(read_checkpoint(run_dir / 'best.pt', map_location=device)['state_dict'])
    val = validate_frames(model, val_set, cfg, device, rank, world)
    if rank == 0:
        best = next((r for r in state['history']
                     if state['best'] is not None and r.get('select_mIoU') == state['best']), {})
        metrics = {**best, **{f'val_{k}': v for k, v in val.items()}}
        save_model(run_dir / 'best.pt', model, cfg, metrics, info, init)
    return val
