"""What makes a run reproducible and its resume exact: the seeding, the learning rate as a pure function of the
step, and each epoch's data order and augmentation as functions of (seed, epoch) only."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from vidseg_ros.config import ConfigError

from .config import TrainConfig


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


def epoch_loader(cfg: TrainConfig, ds, epoch: int, world: int, rank: int) -> DataLoader:
    # Order and augmentation depend on (seed, epoch) only: that is what makes resume exact.
    if hasattr(ds, 'seed'):
        ds.seed = cfg.seed * 100_003 + epoch
    sampler = GlobalBatchSampler(len(ds), cfg.batch_size, world, rank, cfg.seed * 7919 + epoch)
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      drop_last=True, persistent_workers=False)


def endless(make_loader):
    """Batches of a loader made again whenever it runs out (the real clips may be fewer than the steps)."""
    while True:
        empty = True
        for batch in make_loader():
            empty = False
            yield batch
        if empty:
            raise ConfigError('temporal_data has fewer clips than one batch (batch_size per process)')
